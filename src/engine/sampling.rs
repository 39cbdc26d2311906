//! Sampling on the device: penalties, temperature, top-k, top-p and min-p are
//! MLX ops on the logits, so the next token is chosen without a round trip to
//! the host and the decode loop can queue step n+1 before reading token n.

pub use crate::chat::params::SamplingParams;
use crate::error::Result;
use mlx_rs::ops::indexing::{argmax_axis, put_along_axis, take_along_axis, IndexOp};
use mlx_rs::ops::argpartition_axis;
use mlx_rs::{ops, random, Array};

pub struct Sampler {
    params: SamplingParams,
    rng: random::RandomState,
    /// Recent tokens on the device ([1, n] int32), for the repetition penalty.
    history: Option<Array>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt_tail: &[u32]) -> Result<Self> {
        params.validate()?;
        let rng = match params.seed {
            Some(s) => random::RandomState::with_seed(s)?,
            None => random::RandomState::with_seed(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
            )?,
        };
        let history = if params.repetition_penalty != 1.0 && !prompt_tail.is_empty() {
            let start = prompt_tail.len().saturating_sub(params.repetition_context);
            Some(crate::models::layers::token_array(&prompt_tail[start..]))
        } else {
            None
        };
        Ok(Sampler { params, rng, history })
    }

    /// logits [1, vocab] -> token [1] (int32), lazily.
    pub fn sample(&mut self, logits: &Array) -> Result<Array> {
        let p = &self.params;
        let mut logits = logits.as_dtype(mlx_rs::Dtype::Float32)?;
        if p.repetition_penalty != 1.0 {
            if let Some(h) = &self.history {
                let sel = take_along_axis(&logits, h, -1)?;
                let pen = Array::from_f32(p.repetition_penalty);
                let neg = sel.lt(Array::from_f32(0.0))?;
                let adj = ops::select(&neg, sel.multiply(&pen)?, sel.divide(&pen)?)?;
                logits = put_along_axis(&logits, h, &adj, -1)?;
            }
        }
        let token = if p.temperature == 0.0 {
            argmax_axis(&logits, -1, false)?
        } else {
            let vocab = logits.shape()[1];
            let neg_inf = Array::from_f32(f32::NEG_INFINITY);
            let mut l = logits.multiply(Array::from_f32(1.0 / p.temperature))?;
            // A top-k at or above the vocabulary keeps every token (no cast
            // that could wrap: 2^32 must not become 0).
            if p.top_k > 0 && p.top_k < vocab as usize {
                let k = p.top_k as i32;
                let drop = argpartition_axis(l.negative()?, k - 1, -1)?.index((.., k..));
                let fill = ops::broadcast_to(&neg_inf, drop.shape())?;
                l = put_along_axis(&l, &drop, &fill, -1)?;
            }
            if p.top_p < 1.0 {
                let probs = ops::softmax_axis(&l, -1, None)?;
                let order = ops::argsort_axis(&probs, -1)?;
                let sorted = take_along_axis(&probs, &order, -1)?;
                let cum = sorted.cumsum(-1, None, None)?;
                // Ascending order: keep the tail whose mass exceeds 1 - top_p.
                let keep = cum.gt(Array::from_f32(1.0 - p.top_p))?;
                let sorted_l = take_along_axis(&l, &order, -1)?;
                let masked = ops::select(&keep, &sorted_l, &neg_inf)?;
                l = put_along_axis(&l, &order, &masked, -1)?;
            }
            if p.min_p > 0.0 {
                let lp = l.subtract(l.logsumexp_axis(-1, true)?)?;
                let top = lp.max_axis(-1, true)?;
                let threshold = top.add(Array::from_f32(p.min_p.ln()))?;
                l = ops::select(&lp.lt(&threshold)?, &neg_inf, &l)?;
            }
            let key = self.rng.next_key()?;
            random::categorical(&l, -1, None, &key)?
        };
        let token = token.as_dtype(mlx_rs::Dtype::Int32)?;
        if p.repetition_penalty != 1.0 {
            let t = token.reshape(&[1, 1])?;
            let h = match self.history.take() {
                Some(h) => {
                    let h = ops::concatenate(&[h, t], 1)?;
                    let n = h.shape()[1];
                    let ctx = p.repetition_context.max(1) as i32;
                    if n > ctx { h.index((.., (n - ctx)..)) } else { h }
                }
                None => t,
            };
            self.history = Some(h);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(v: &[f32]) -> Array {
        Array::from_slice(v, &[1, v.len() as i32])
    }

    fn id(a: &Array) -> i32 {
        a.try_item_exact::<i32>().unwrap()
    }

    #[test]
    fn a_top_k_beyond_the_vocabulary_keeps_every_token() {
        // 2^32 wrapped to 0 once (no filter, but by accident); 2^31 to a negative k.
        for k in [1usize << 32, (1 << 31) + 3, 4] {
            let p = SamplingParams { temperature: 1.0, top_k: k, top_p: 1.0, min_p: 0.0, seed: Some(1), ..SamplingParams::greedy() };
            let mut s = Sampler::new(p, &[]).unwrap();
            let seen: std::collections::BTreeSet<i32> =
                (0..200).map(|_| id(&s.sample(&logits(&[0.0, 0.0, 0.0, 0.0])).unwrap())).collect();
            assert_eq!(seen.len(), 4, "top-k {k}: {seen:?}");
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]).unwrap();
        assert_eq!(id(&s.sample(&logits(&[0.1, 3.0, -1.0, 2.9])).unwrap()), 1);
    }

    #[test]
    fn top_k_one_always_picks_the_best() {
        let p = SamplingParams { temperature: 1.5, top_k: 1, seed: Some(7), ..SamplingParams::greedy() };
        let mut s = Sampler::new(p, &[]).unwrap();
        for _ in 0..20 {
            assert_eq!(id(&s.sample(&logits(&[0.0, 1.0, 0.5, 0.9])).unwrap()), 1);
        }
    }

    #[test]
    fn repetition_penalty_pushes_a_seen_token_below_the_next_best() {
        // Token 1 was in the prompt: 2.0 / 1.5 = 1.33 falls below token 2's 1.9.
        let p = SamplingParams { repetition_penalty: 1.5, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p, &[1]).unwrap();
        assert_eq!(id(&s.sample(&logits(&[0.0, 2.0, 1.9])).unwrap()), 2);
    }

    #[test]
    fn same_seed_same_samples() {
        let p = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, seed: Some(42), ..SamplingParams::greedy() };
        let l = logits(&[0.5; 50]);
        let run = |p: SamplingParams| {
            let mut s = Sampler::new(p, &[]).unwrap();
            (0..10).map(|_| id(&s.sample(&l).unwrap())).collect::<Vec<_>>()
        };
        assert_eq!(run(p.clone()), run(p));
    }
}
