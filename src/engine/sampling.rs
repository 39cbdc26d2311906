//! Sampling on the device: penalties, temperature, top-k, top-p and min-p are
//! MLX ops on the logits, so the next token is chosen without a round trip to
//! the host and the decode loop can queue step n+1 before reading token n.
//! Log-probabilities, when asked for, are computed beside the token and read
//! with it.

pub use crate::chat::params::SamplingParams;
use crate::error::Result;
use mlx_rs::ops::indexing::{argmax_axis, put_along_axis, take_along_axis, IndexOp};
use mlx_rs::ops::argpartition_axis;
use mlx_rs::{ops, random, Array};

pub struct Sampler {
    params: SamplingParams,
    rng: random::RandomState,
    /// Recent tokens on the device ([1, n] int32), for the penalties.
    history: Option<Array>,
    /// Alternatives to report per token (None: no log-probabilities).
    top_logprobs: Option<usize>,
}

/// A sampled token's log-probability and the best alternatives, still on
/// the device.
pub struct Scores {
    chosen: Array,
    top: Option<(Array, Array)>,
}

impl Scores {
    /// Reads them: the token's log-probability and (id, log-probability) of
    /// the alternatives, most likely first.
    pub fn read(&self) -> Result<(f32, Vec<(u32, f32)>)> {
        let chosen = self.chosen.try_item_exact::<f32>().map_err(|e| crate::error::Error::Mlx(e.to_string()))?;
        let mut top = Vec::new();
        if let Some((ids, values)) = &self.top {
            top = ids.as_slice::<i32>().iter().zip(values.as_slice::<f32>()).map(|(&i, &v)| (i as u32, v)).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
        Ok((chosen, top))
    }

    pub fn arrays(&self) -> Vec<&Array> {
        let mut v = vec![&self.chosen];
        if let Some((i, l)) = &self.top {
            v.extend([i, l]);
        }
        v
    }
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
        let history = if params.penalizes() && !prompt_tail.is_empty() {
            let start = prompt_tail.len().saturating_sub(params.repetition_context);
            Some(crate::models::nn::layers::token_array(&prompt_tail[start..]))
        } else {
            None
        };
        Ok(Sampler { params, rng, history, top_logprobs: None })
    }

    /// Also computes each token's log-probability and `top` alternatives.
    pub fn with_logprobs(mut self, top: Option<usize>) -> Self {
        self.top_logprobs = top.map(|k| k.min(crate::chat::params::MAX_TOP_LOGPROBS));
        self
    }

    /// logits [1, vocab] -> token [1] (int32), lazily.
    pub fn sample(&mut self, logits: &Array) -> Result<Array> {
        Ok(self.sample_scored(logits)?.0)
    }

    /// The token and, if asked for, its scores (lazily).
    pub fn sample_scored(&mut self, logits: &Array) -> Result<(Array, Option<Scores>)> {
        let p = &self.params;
        let mut logits = logits.as_dtype(mlx_rs::Dtype::Float32)?;
        if let Some(h) = self.history.as_ref().filter(|_| p.penalizes()) {
            // Each seen token's logit once (a token seen twice is written
            // twice with the same value), as mlx-lm's processors do in turn:
            // sign-aware repetition, then presence, then frequency.
            let mut adj = take_along_axis(&logits, h, -1)?;
            if p.repetition_penalty != 1.0 {
                let pen = Array::from_f32(p.repetition_penalty);
                let neg = adj.lt(Array::from_f32(0.0))?;
                adj = ops::select(&neg, adj.multiply(&pen)?, adj.divide(&pen)?)?;
            }
            if p.presence_penalty != 0.0 {
                adj = adj.subtract(Array::from_f32(p.presence_penalty))?;
            }
            if p.frequency_penalty != 0.0 {
                // How often each entry's token occurs in the window: [1, n].
                let same = h.expand_dims(-1)?.eq(&h.expand_dims(1)?)?;
                let counts = same.as_dtype(mlx_rs::Dtype::Float32)?.sum_axis(-1, false)?;
                adj = adj.subtract(counts.multiply(Array::from_f32(p.frequency_penalty))?)?;
            }
            logits = put_along_axis(&logits, h, &adj, -1)?;
        }
        let logprobs = match self.top_logprobs {
            Some(_) => Some(logits.subtract(logits.logsumexp_axis(-1, true)?)?),
            None => None,
        };
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
        let scores = match (&logprobs, self.top_logprobs) {
            (Some(lp), Some(k)) => {
                let chosen = take_along_axis(lp, &token.reshape(&[1, 1])?, -1)?.reshape(&[-1])?;
                let vocab = lp.shape()[1];
                let k = (k as i32).min(vocab);
                let top = if k > 0 {
                    let ids = argpartition_axis(lp.negative()?, k - 1, -1)?.index((.., ..k));
                    let values = take_along_axis(lp, &ids, -1)?;
                    Some((ids.as_dtype(mlx_rs::Dtype::Int32)?.reshape(&[-1])?, values.reshape(&[-1])?))
                } else {
                    None
                };
                Some(Scores { chosen, top })
            }
            _ => None,
        };
        self.remember(token.reshape(&[1, 1])?)?;
        Ok((token, scores))
    }

    /// A token fed without being drawn (markup forced into the reply): the
    /// penalties count it as they count a drawn one.
    pub fn record(&mut self, id: u32) -> Result<()> {
        self.remember(Array::from_slice(&[id as i32], &[1, 1]))
    }

    /// Appends token `t` ([1, 1]) to the penalties' window.
    fn remember(&mut self, t: Array) -> Result<()> {
        let p = &self.params;
        if !p.penalizes() {
            return Ok(());
        }
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
        Ok(())
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
    fn presence_and_frequency_penalties_subtract_per_window() {
        // Token 1 seen three times, token 2 once: presence 0.5 takes 0.5 from
        // both, frequency 0.4 takes 1.2 and 0.4.
        let p = SamplingParams { presence_penalty: 0.5, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p, &[1, 2, 1, 1]).unwrap();
        assert_eq!(id(&s.sample(&logits(&[2.0, 2.4, 2.45])).unwrap()), 0, "2.4 - 0.5 and 2.45 - 0.5 fall below 2.0");
        let p = SamplingParams { frequency_penalty: 0.4, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p.clone(), &[1, 2, 1, 1]).unwrap();
        assert_eq!(id(&s.sample(&logits(&[1.9, 3.0, 2.35])).unwrap()), 2, "3.0 - 1.2 = 1.8 < 2.35 - 0.4 = 1.95");
        let mut s = Sampler::new(p, &[1, 2, 1, 1]).unwrap();
        assert_eq!(id(&s.sample(&logits(&[2.0, 3.0, 2.35])).unwrap()), 0);
    }

    #[test]
    fn log_probabilities_are_the_models_distribution_and_its_best_alternatives() {
        let l = logits(&[1.0, 3.0, 0.0, 2.0]);
        let z = [1.0f32, 3.0, 0.0, 2.0].iter().map(|x| x.exp()).sum::<f32>().ln();
        // Sampling at a high temperature does not change what is reported.
        let p = SamplingParams { temperature: 5.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: Some(3), ..SamplingParams::greedy() };
        let mut s = Sampler::new(p, &[]).unwrap().with_logprobs(Some(2));
        let (t, scores) = s.sample_scored(&l).unwrap();
        let (chosen, top) = scores.unwrap().read().unwrap();
        let want = [1.0f32, 3.0, 0.0, 2.0][id(&t) as usize] - z;
        assert!((chosen - want).abs() < 1e-5, "{chosen} vs {want}");
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((top[0].1 - (3.0 - z)).abs() < 1e-5 && (top[1].1 - (2.0 - z)).abs() < 1e-5, "{top:?}");
        // Without asking, nothing is computed.
        let mut s = Sampler::new(SamplingParams::greedy(), &[]).unwrap();
        assert!(s.sample_scored(&l).unwrap().1.is_none());
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
