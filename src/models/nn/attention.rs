//! Grouped-query attention over a KV cache, shared by the llama-like families
//! and Gemma 3, for one sequence or a batch of them (`forward_rows`); the
//! masks it attends under are in `mask`.

use crate::models::cache::KvCache;
use crate::models::nn::layers::with_bias;
use crate::models::nn::rope::Rope;
use crate::models::{Linear, RmsNorm, Weights};
use crate::error::Result;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;

pub use crate::models::nn::mask::{attention_mask, hybrid_mask, layer_kv, row_masks, LayerMasks, Mask};

/// What differs between the families that use this attention.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpec {
    pub hidden: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    /// Bias on the q/k/v projections (Qwen2, `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias`).
    pub o_bias: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3, Gemma 3).
    pub qk_norm: Option<QkNorm>,
    /// Softmax scale (head_dim^-0.5 unless the config says otherwise).
    pub scale: f32,
    /// A learned logit per head that joins every softmax (`{p}.sinks`, gpt-oss):
    /// attention may go "nowhere" instead of being forced onto the keys.
    pub sinks: bool,
    /// Llama 4 / Ministral 3 long-context query scaling: queries at position p
    /// are multiplied by `1 + beta * ln(1 + floor(p / original_max))`.
    pub position_scale: Option<PositionScale>,
    /// One sequence's decode attention in the fused CUDA kernel
    /// (`kernels::cuda::attention`), per family where an A/B run showed it
    /// wins. H100, decode tok/s at 128 / 2,048 prompt tokens, kernel on /
    /// off (`HEARTH_DECODE_ATTENTION=0`), the other fused kernels on, one run:
    /// Qwen3-30B-A3B 193.4 / 154.5 and 168.7 / 154.9 (on: the MoE step is
    /// paced by the host, and the kernel sheds ops); Llama-3.1-8B 170.8 /
    /// 182.2 and 169.5 / 173.0 (off: the dense step is paced by the GPU,
    /// where MLX's SDPA is faster). docs/bench/h100-decode-attention-per-family.txt.
    pub fused_decode: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct PositionScale {
    pub beta: f32,
    pub original_max: f32,
}

impl PositionScale {
    /// Factors for `l` positions from `offset`, shaped [l, 1] to scale [B, H, l, D].
    fn factors(&self, offset: i32, l: i32, dtype: mlx_rs::Dtype) -> Result<Array> {
        let pos = mlx_rs::ops::arange::<_, f32>(offset as f32, (offset + l) as f32, None)?;
        let f = mlx_rs::ops::floor(pos.divide(mlx_rs::array!(self.original_max))?)?;
        let s = mlx_rs::ops::log1p(&f)?.multiply(mlx_rs::array!(self.beta))?.add(mlx_rs::array!(1.0f32))?;
        Ok(s.reshape(&[l, 1])?.as_dtype(dtype)?)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct QkNorm {
    pub eps: f32,
    /// Gemma stores norm weights as w and scales by (1 + w).
    pub plus_one: bool,
}

/// The q, k and v projections: stacked into one matmul where their kinds
/// match (`Linear::stack_rows`), else apart.
enum Qkv {
    Stacked(Linear),
    Apart { q_proj: Linear, k_proj: Linear, v_proj: Linear },
}

pub struct Attention {
    qkv: Qkv,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: i32,
    n_kv: i32,
    head_dim: i32,
    scale: f32,
    sinks: Option<Array>,
    position_scale: Option<PositionScale>,
    /// The decode attention kernel's counters (`kernels::cuda::attention`; CUDA only).
    counter: Option<Array>,
}

impl Attention {
    /// Takes `{p}.{q,k,v,o}_proj` (and `{p}.{q,k}_norm`) from `w`.
    pub fn load(w: &mut Weights, p: &str, s: AttentionSpec) -> Result<Self> {
        let (h, nh, nkv, hd) = (s.hidden, s.heads, s.kv_heads, s.head_dim);
        let norm = |w: &mut Weights, n: &str| -> Result<Option<RmsNorm>> {
            s.qk_norm
                .map(|q| {
                    let name = format!("{p}.{n}");
                    if q.plus_one {
                        RmsNorm::load_plus_one(w, &name, hd, q.eps)
                    } else {
                        RmsNorm::load(w, &name, hd, q.eps)
                    }
                })
                .transpose()
        };
        let parts = [
            Linear::load(w, &format!("{p}.q_proj"), nh * hd, h, s.qkv_bias)?,
            Linear::load(w, &format!("{p}.k_proj"), nkv * hd, h, s.qkv_bias)?,
            Linear::load(w, &format!("{p}.v_proj"), nkv * hd, h, s.qkv_bias)?,
        ];
        let qkv = match Linear::stack_rows(&parts)? {
            Some(l) => Qkv::Stacked(l),
            None => {
                let [q_proj, k_proj, v_proj] = parts;
                Qkv::Apart { q_proj, k_proj, v_proj }
            }
        };
        Ok(Attention {
            qkv,
            o_proj: Linear::load(w, &format!("{p}.o_proj"), h, nh * hd, s.o_bias)?,
            q_norm: norm(w, "q_norm")?,
            k_norm: norm(w, "k_norm")?,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            scale: s.scale,
            sinks: if s.sinks { Some(w.take_shaped(&format!("{p}.sinks"), &[nh])?) } else { None },
            position_scale: s.position_scale,
            counter: if s.fused_decode { crate::models::kernels::cuda::attention::counter(nkv) } else { None },
        })
    }

    pub fn forward(&self, x: &Array, cache: &mut KvCache, rope: &Rope, mask: &Mask) -> Result<Array> {
        let (y, bias) = self.forward_parts(x, cache, rope, mask)?;
        with_bias(y, bias)
    }

    /// `forward` with the output projection's bias (gpt-oss) handed back
    /// instead of added, for the residual kernel to add
    /// (`RmsNorm::after_biased_residual`).
    pub fn forward_parts(&self, x: &Array, cache: &mut KvCache, rope: &Rope, mask: &Mask) -> Result<(Array, Option<&Array>)> {
        self.forward_rows_parts(x, &mut [cache], rope, &[mask])
    }

    /// Attention for a batch of sequences: `x` is [B, L, hidden]; `caches`
    /// are groups of rows in order, each with its mask: one sequence's cache
    /// (one row), or a merged cache of several (`KvCache::merge`: its rows
    /// at their own positions, left-padded keys masked out). The projections
    /// run once for all rows (one matmul reads the weights for every
    /// sequence, which is what batching buys on a bandwidth-bound decode);
    /// RoPE, the cache write and the attention run once per group.
    pub fn forward_rows(&self, x: &Array, caches: &mut [&mut KvCache], rope: &Rope, masks: &[&Mask]) -> Result<Array> {
        let (y, bias) = self.forward_rows_parts(x, caches, rope, masks)?;
        with_bias(y, bias)
    }

    /// `forward_rows` with the output projection's bias handed back (`forward_parts`).
    pub fn forward_rows_parts(&self, x: &Array, caches: &mut [&mut KvCache], rope: &Rope, masks: &[&Mask]) -> Result<(Array, Option<&Array>)> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let rows: usize = caches.iter().map(|c| c.rows()).sum();
        if rows != b as usize || masks.len() != caches.len() {
            return Err(crate::models::cfg_err(format!("{b} rows with caches for {rows} and {} masks for {} caches", masks.len(), caches.len())));
        }
        // [B, L, n*D] -> [B, n, L, D]; the per-head norm (Qwen3) runs before the
        // transpose, on contiguous rows, which is what the fused rms_norm wants.
        let heads = |a: Array, n: i32, norm: Option<&RmsNorm>| -> Result<Array> {
            let a = a.reshape(&[b, l, n, self.head_dim])?;
            let a = match norm {
                Some(nm) => nm.forward(&a)?,
                None => a,
            };
            Ok(a.transpose_axes(&[0, 2, 1, 3])?)
        };
        // The ops path: heads apart (and normed) for all rows; rotated per row below.
        let split = |q: Array, k: Array, v: Array| -> Result<(Array, Array, Array, bool)> {
            Ok((heads(q, self.n_heads, self.q_norm.as_ref())?, heads(k, self.n_kv, self.k_norm.as_ref())?, heads(v, self.n_kv, None)?, false))
        };
        // `rotated`: the fused kernel already applied RoPE (one row, one token).
        let (q, k, v, rotated) = match &self.qkv {
            Qkv::Stacked(proj) => {
                let (y, bias) = proj.forward_parts(x)?;
                match self.fused_heads(&y, bias, b * l, rope, caches[0].offset())? {
                    Some([q, k, v]) => (q, k, v, true),
                    None => {
                        let y = with_bias(y, bias)?;
                        let (nq, nk) = (self.n_heads * self.head_dim, self.n_kv * self.head_dim);
                        split(y.index((.., .., ..nq)), y.index((.., .., nq..nq + nk)), y.index((.., .., nq + nk..)))?
                    }
                }
            }
            Qkv::Apart { q_proj, k_proj, v_proj } => split(q_proj.forward(x)?, k_proj.forward(x)?, v_proj.forward(x)?)?,
        };
        let mut outs = Vec::with_capacity(caches.len());
        let mut r = 0i32;
        let whole = caches.len() == 1;
        for (cache, mask) in caches.iter_mut().zip(masks) {
            let n = cache.rows() as i32;
            let rows = |a: &Array| if whole { a.clone() } else { a.index(r..r + n) };
            let (q, k, v) = (rows(&q), rows(&k), rows(&v));
            r += n;
            let (q, k) = match (rotated, cache.positions()) {
                (true, _) => (q, k),
                (false, None) => self.rotate(q, k, rope, cache.offset(), l)?,
                (false, Some(_)) if self.position_scale.is_some() => {
                    return Err(crate::models::cfg_err("a merged cache with long-context query scaling"));
                }
                (false, Some(pos)) => (rope.apply_rows(&q, &pos)?, rope.apply_rows(&k, &pos)?),
            };
            let pads = cache.pads().map(|p| Array::from_slice(p, &[n]));
            let (k, v) = cache.update_and_fetch_parts(&k, &v)?;
            outs.push(match (k.dense(), v.dense(), cache.quant()) {
                (Some(k), Some(v), _) => self.attend_rows(&q, k, v, mask, pads.as_ref())?,
                (_, _, Some(spec)) => {
                    let o = mask.attend_quantized(&q, &k, &v, self.scale, self.sinks.as_ref(), spec)?;
                    o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[n, l, -1])?
                }
                _ => return Err(crate::models::cfg_err("a KV cache with parts but no quantization")),
            });
        }
        let o = if outs.len() == 1 { outs.pop().expect("one row") } else { mlx_rs::ops::concatenate(&outs, 0)? };
        self.o_proj.forward_parts(&o)
    }

    /// A group's attention of `q` ([n, heads, L, D]) over its cached `k`,
    /// `v`, as [n, L, heads * D] for the output projection. `pads`: a merged
    /// cache's left padding per row.
    fn attend_rows(&self, q: &Array, k: &Array, v: &Array, mask: &Mask, pads: Option<&Array>) -> Result<Array> {
        let (n, l) = (q.shape()[0], q.shape()[2]);
        if let (1, Some(counter)) = (l, &self.counter) {
            // One token a row on CUDA: one kernel straight to the projection's
            // input; merged rows start at their padding instead of masking it
            // (shapes it does not take fall through to MLX's SDPA below).
            let keys = match pads {
                Some(_) => Some((k.clone(), v.clone())),
                None => mask.decode_keys(k, v),
            };
            let sw = crate::models::kernels::switches();
            if let Some((k, v)) = keys.filter(|_| if pads.is_some() { sw.batch_attention } else { sw.decode_attention }) {
                if let Some(o) = crate::models::kernels::cuda::attention::attend(q, &k, &v, self.sinks.as_ref(), pads, counter, self.scale)? {
                    return Ok(o);
                }
            }
        }
        let o = mask.attend(q, k, v, self.scale, self.sinks.as_ref())?;
        Ok(o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[n, l, -1])?)
    }

    /// RoPE on q and k ([B, n, L, D]) at `offset`, and the long-context query
    /// scale where the family has one.
    fn rotate(&self, q: Array, k: Array, rope: &Rope, offset: i32, l: i32) -> Result<(Array, Array)> {
        let q = rope.apply(&q, offset)?;
        let k = rope.apply(&k, offset)?;
        let q = match &self.position_scale {
            Some(ps) => q.multiply(ps.factors(offset, l, q.dtype())?)?,
            None => q,
        };
        Ok((q, k))
    }

    /// One token's q, k, v from the stacked projection in one CUDA kernel
    /// (`kernels::cuda::decode::qkv_heads`: the head norms and RoPE fused), where it
    /// applies: `rows` (batch x length) is 1, the RoPE rotates whole heads,
    /// both head norms or neither, no long-context query scale.
    fn fused_heads(&self, y: &Array, bias: Option<&Array>, rows: i32, rope: &Rope, offset: i32) -> Result<Option<[Array; 3]>> {
        if rows != 1 || self.position_scale.is_some() || !crate::models::kernels::cuda::decode::enabled() {
            return Ok(None);
        }
        let Some(rotation) = rope.rotation(self.head_dim) else { return Ok(None) };
        let norms = match (&self.q_norm, &self.k_norm) {
            (Some(q), Some(k)) if q.eps == k.eps => Some(crate::models::kernels::cuda::decode::HeadNorms { q: &q.weight, k: &k.weight, eps: q.eps }),
            (None, None) => None,
            _ => return Ok(None),
        };
        let heads = crate::models::kernels::cuda::decode::Heads { q: self.n_heads, kv: self.n_kv, dim: self.head_dim };
        crate::models::kernels::cuda::decode::qkv_heads(y, bias, heads, norms, rotation, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::ops;

    fn kv(n: i32) -> (Array, Array) {
        let k = ops::ones::<f32>(&[1, 1, n, 2]).unwrap();
        (k.clone(), k)
    }

    #[test]
    fn causal_for_prefill_none_for_decode() {
        let mut c = KvCache::new();
        assert!(matches!(attention_mask(5, &mut c).unwrap(), Mask::Causal));
        let (k, v) = kv(5);
        c.update_and_fetch(&k, &v).unwrap();
        assert!(matches!(attention_mask(1, &mut c).unwrap(), Mask::None));
    }

    /// A merged cache's mask hides each row's left padding and keeps the
    /// new queries causal.
    #[test]
    fn merged_cache_mask_hides_the_padding() {
        let mut a = KvCache::new();
        let (k, v) = kv(2);
        a.update_and_fetch(&k, &v).unwrap();
        let mut b = KvCache::new();
        let (k, v) = kv(4);
        b.update_and_fetch(&k, &v).unwrap();
        let mut m = KvCache::merge(vec![a, b]).unwrap();
        let Mask::Array(mask) = attention_mask(2, &mut m).unwrap() else { panic!("a merged cache needs an explicit mask") };
        assert_eq!(mask.shape(), &[2, 1, 2, 6]);
        let v: Vec<bool> = mask.as_slice::<bool>().to_vec();
        // Row 0 (padded by 2): its first new query sees keys 2..=4, not 0, 1 or 5.
        assert_eq!(&v[0..6], &[false, false, true, true, true, false]);
        // Row 1 (no padding): its second new query sees everything.
        assert_eq!(&v[18..24], &[true; 6]);
    }

    #[test]
    fn sliding_window_mask_limits_the_past() {
        let mut c = KvCache::windowed(3);
        let m = attention_mask(5, &mut c).unwrap();
        let Mask::Array(a) = m else { panic!("a window shorter than the prompt needs an explicit mask") };
        assert_eq!(a.shape(), &[5, 5]);
        let v: Vec<bool> = a.as_slice::<bool>().to_vec();
        // Row 4 (the last query) sees keys 2, 3, 4 only.
        assert_eq!(&v[20..25], &[false, false, true, true, true]);
        // Row 0 sees only itself.
        assert_eq!(&v[0..5], &[true, false, false, false, false]);
    }

    /// Attention over a quantized cache (mlx-lm's quantized SDPA) equals
    /// MLX's SDPA over the same keys and values dequantized, under every
    /// mask (decode, causal prefill over a cached prefix, a merged cache's
    /// padding, a window cut), with grouped heads and with sinks.
    #[test]
    fn quantized_cache_attention_equals_sdpa_over_the_dequantized_keys() {
        use mlx_rs::random;
        let normal = |shape: &[i32], seed: u64| random::normal::<f32>(shape, 0.0, 1.0, &random::key(seed).unwrap()).unwrap();
        let spec = crate::models::cache::KvQuant::new(8).unwrap();
        let dequant = |p: &crate::models::cache::KvParts| ops::dequantize(&p.0[0], &p.0[1], &p.0[2], 64, 8).unwrap();
        let sinks = Array::from_slice(&[0.5f32, -1.0, 2.0, 0.0], &[4]);
        // 4 query heads over 2 KV heads of 64 dims; 6 cached positions, then 3 new.
        let mut c = KvCache::quantized(spec);
        c.update_and_fetch_parts(&normal(&[1, 2, 6, 64], 1), &normal(&[1, 2, 6, 64], 2)).unwrap();
        let (k, v) = c.update_and_fetch_parts(&normal(&[1, 2, 3, 64], 3), &normal(&[1, 2, 3, 64], 4)).unwrap();
        assert!(k.dense().is_none() && k.positions_held() == 9);
        let (kd, vd) = (dequant(&k), dequant(&v));
        let window = Array::from_slice(&(0..27).map(|i| i % 9 >= 2 + i / 9).collect::<Vec<_>>(), &[3, 9]);
        let cases = [(Mask::Causal, 3), (Mask::None, 1), (Mask::Recent(4), 1), (Mask::Array(window), 3)];
        for (mask, l) in cases {
            let q = normal(&[1, 4, l, 64], 5 + l as u64);
            for s in [None, Some(&sinks)] {
                let got = mask.attend_quantized(&q, &k, &v, 0.125, s, spec).unwrap();
                let want = mask.attend(&q, &kd, &vd, 0.125, s).unwrap();
                assert_eq!(got.shape(), want.shape());
                let diff = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
                assert!(diff < 1e-4, "{l} queries, sinks {}: {diff}", s.is_some());
            }
        }
        // A merged cache of two rows, the first padded by 2.
        let mut a = KvCache::quantized(spec);
        a.update_and_fetch_parts(&normal(&[1, 2, 2, 64], 7), &normal(&[1, 2, 2, 64], 8)).unwrap();
        let mut b = KvCache::quantized(spec);
        b.update_and_fetch_parts(&normal(&[1, 2, 4, 64], 9), &normal(&[1, 2, 4, 64], 10)).unwrap();
        let mut m = KvCache::merge(vec![a, b]).unwrap();
        let mask = attention_mask(1, &mut m).unwrap();
        let (k, v) = m.update_and_fetch_parts(&normal(&[2, 2, 1, 64], 11), &normal(&[2, 2, 1, 64], 12)).unwrap();
        let q = normal(&[2, 4, 1, 64], 13);
        let got = mask.attend_quantized(&q, &k, &v, 0.125, None, spec).unwrap();
        let want = mask.attend(&q, &dequant(&k), &dequant(&v), 0.125, None).unwrap();
        let diff = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(diff < 1e-4, "merged rows: {diff}");
    }

    /// Attention as MLX ops (the path a few queries take on CUDA) equals
    /// MLX's fused SDPA under every mask of several queries, with grouped
    /// heads and with sinks, in float32 and in bfloat16.
    #[test]
    fn attention_by_ops_equals_the_fused_sdpa() {
        use mlx_rs::random;
        let normal = |shape: &[i32], seed: u64| random::normal::<f32>(shape, 0.0, 1.0, &random::key(seed).unwrap()).unwrap();
        let sinks = Array::from_slice(&[0.5f32, -1.0, 2.0, 0.0], &[4]);
        let (k, v) = (normal(&[1, 2, 40, 64], 1), normal(&[1, 2, 40, 64], 2));
        let window = Array::from_slice(&(0..5 * 40).map(|i| i % 40 >= 30 + i / 40).collect::<Vec<_>>(), &[5, 40]);
        for (mask, l) in [(Mask::Causal, 5), (Mask::Causal, 40), (Mask::Array(window), 5)] {
            let q = normal(&[1, 4, l, 64], 3 + l as u64);
            for s in [None, Some(&sinks)] {
                for dtype in [mlx_rs::Dtype::Float32, mlx_rs::Dtype::Bfloat16] {
                    let (q, k, v) = (q.as_dtype(dtype).unwrap(), k.as_dtype(dtype).unwrap(), v.as_dtype(dtype).unwrap());
                    let s = s.map(|s| s.as_dtype(dtype).unwrap());
                    let s = s.as_ref();
                    let got = mask.attend_unfused(&q, &k, &v, 0.125, s).unwrap();
                    let want = mlx_rs::fast::scaled_dot_product_attention(&q, &k, &v, 0.125, mask_for_sdpa(&mask), s).unwrap();
                    assert_eq!((got.shape(), got.dtype()), (want.shape(), want.dtype()));
                    let diff = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().as_dtype(mlx_rs::Dtype::Float32).unwrap().item_exact::<f32>();
                    let tol = if dtype == mlx_rs::Dtype::Float32 { 1e-4 } else { 2e-2 };
                    assert!(diff < tol, "{l} queries, sinks {}, {dtype:?}: {diff}", s.is_some());
                }
            }
        }
    }

    fn mask_for_sdpa(m: &Mask) -> Option<mlx_rs::fast::ScaledDotProductAttentionMask<'_>> {
        match m {
            Mask::Causal => Some(mlx_rs::fast::ScaledDotProductAttentionMask::Causal),
            Mask::Array(a) => Some(mlx_rs::fast::ScaledDotProductAttentionMask::Array(a)),
            _ => None,
        }
    }

    /// Decode past the window cuts the keys to the last `window` instead of
    /// masking: the same attention as the explicit mask, with and without sinks.
    #[test]
    fn decode_past_the_window_attends_like_the_explicit_mask() {
        use mlx_rs::random;
        let mut c = KvCache::windowed(3);
        let key = |n| random::key(n).unwrap();
        let k = random::normal::<f32>(&[1, 2, 5, 4][..], 0.0, 1.0, &key(1)).unwrap();
        let v = random::normal::<f32>(&[1, 2, 5, 4][..], 0.0, 1.0, &key(2)).unwrap();
        c.update_and_fetch(&k, &v).unwrap();
        let m = attention_mask(1, &mut c).unwrap();
        assert!(matches!(m, Mask::Recent(3)), "one query past the window cuts the keys");
        let q = random::normal::<f32>(&[1, 4, 1, 4][..], 0.0, 1.0, &key(3)).unwrap();
        let (k6, v6) = (random::normal::<f32>(&[1, 2, 1, 4][..], 0.0, 1.0, &key(4)).unwrap(), random::normal::<f32>(&[1, 2, 1, 4][..], 0.0, 1.0, &key(5)).unwrap());
        let (keys, values) = c.update_and_fetch(&k6, &v6).unwrap();
        let n = keys.shape()[2];
        let explicit = Mask::Array(Array::from_slice(&(0..n).map(|i| i >= n - 3).collect::<Vec<_>>(), &[1, n]));
        let sinks = Array::from_slice(&[0.5f32, -1.0, 2.0, 0.0], &[4]);
        for s in [None, Some(&sinks)] {
            let got = m.attend(&q, &keys, &values, 0.5, s).unwrap();
            let want = explicit.attend(&q, &keys, &values, 0.5, s).unwrap();
            let diff = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
            assert!(diff < 1e-5, "cut keys differ from the masked ones by {diff} (sinks: {})", s.is_some());
        }
    }
}
