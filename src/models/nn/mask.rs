//! The attention masks, built once per forward pass at model level (as
//! mlx-lm's `create_attention_mask`) and handed to every layer that shares
//! them: causal, sliding-window, one decode query past its window, and a
//! merged cache's left padding; and the per-row pieces a batched pass
//! hands each layer (`layer_kv`, `row_masks`).

use crate::models::cache::{KvCache, KvParts, KvQuant};
use crate::models::nn::quant::{quantized_matmul_t, QuantSpec};
use crate::error::Result;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;

/// The mask for one forward pass of `l` new tokens.
pub enum Mask {
    /// One query (decode) over a cache it may see entirely.
    None,
    /// Each new token sees itself and everything before it.
    Causal,
    /// Explicit [l, keys] boolean mask (sliding windows that cut into the cache).
    Array(Array),
    /// One query (decode) that sees only the last `n` keys: a sliding window
    /// shorter than the cache. The keys are cut to those instead of masked:
    /// on CUDA, MLX's SDPA with a mask array took 50 us per gpt-oss-20b layer
    /// against 18.5 without (`scripts/gpu/sdpa_costs.py`,
    /// `docs/bench/h100-sdpa-costs.txt`).
    Recent(i32),
}

impl Mask {
    fn as_sdpa(&self) -> Option<ScaledDotProductAttentionMask<'_>> {
        match self {
            Mask::None | Mask::Recent(_) => None,
            Mask::Causal => Some(ScaledDotProductAttentionMask::Causal),
            Mask::Array(a) => Some(ScaledDotProductAttentionMask::Array(a)),
        }
    }

    /// The keys and values one decode query sees under this mask (the last
    /// `n` for `Recent(n)`, views into the cache); None for the masks of
    /// several queries.
    pub fn decode_keys(&self, k: &Array, v: &Array) -> Option<(Array, Array)> {
        let keys = k.shape()[2];
        match self {
            Mask::Recent(n) if keys > *n => Some((k.index((.., .., keys - n.., ..)), v.index((.., .., keys - n.., ..)))),
            Mask::None | Mask::Recent(_) => Some((k.clone(), v.clone())),
            Mask::Causal | Mask::Array(_) => None,
        }
    }

    /// Attention of `q` ([B, heads, L, D]) over a quantized cache's keys and
    /// values under this mask, as mlx-lm's `quantized_scaled_dot_product_attention`:
    /// the scores and the weighted sum are quantized matmuls that read the
    /// packed cache as it is. Returns [B, heads, L, D], as `attend`.
    pub fn attend_quantized(&self, q: &Array, k: &KvParts, v: &KvParts, scale: f32, sinks: Option<&Array>, quant: KvQuant) -> Result<Array> {
        let spec = QuantSpec::affine(quant.group_size, quant.bits);
        let (k, v) = match self {
            Mask::Recent(n) if k.positions_held() > *n => (k.positions(k.positions_held() - n, k.positions_held()), v.positions(v.positions_held() - n, v.positions_held())),
            _ => (k.clone(), v.clone()),
        };
        let grouped = |a: &Array| a.expand_dims(2);
        let (kw, ks, kb) = (grouped(&k.0[0])?, grouped(&k.0[1])?, grouped(&k.0[2])?);
        let (vw, vs, vb) = (grouped(&v.0[0])?, grouped(&v.0[1])?, grouped(&v.0[2])?);
        self.attend_by_ops(
            q,
            (k.0[0].shape()[1], k.positions_held()),
            scale,
            sinks,
            |q| quantized_matmul_t(q, &kw, &ks, Some(&kb), spec, true),
            |p| quantized_matmul_t(p, &vw, &vs, Some(&vb), spec, false),
        )
    }

    /// Attention as MLX ops, not the fused kernel: scores, the mask, a
    /// softmax in float32 and the weighted sum, the two products given
    /// (`scores` of the grouped queries [B, kv_heads, rep, L, D] against the
    /// keys, `weigh` of the probabilities against the values). Grouped heads
    /// share their KV head through a broadcast axis. `kv`: (KV heads, keys).
    fn attend_by_ops(
        &self,
        q: &Array,
        (kv_heads, keys): (i32, i32),
        scale: f32,
        sinks: Option<&Array>,
        scores: impl Fn(&Array) -> Result<Array>,
        weigh: impl Fn(&Array) -> Result<Array>,
    ) -> Result<Array> {
        let [b, heads, l, d] = q.shape()[..] else { return Err(crate::models::cfg_err("queries of [B, heads, L, D] expected")) };
        let rep = heads / kv_heads;
        // [B, kv_heads, rep, L, D] against [B, kv_heads, 1, S, ·].
        let q = q.multiply(Array::from_f32(scale).as_dtype(q.dtype())?)?.reshape(&[b, kv_heads, rep, l, d])?;
        let mut scores = scores(&q)?;
        let allowed = match self {
            Mask::None | Mask::Recent(_) => None,
            Mask::Causal => {
                let qi = mlx_rs::ops::arange::<_, i32>(keys - l, keys, None)?.reshape(&[l, 1])?;
                let ki = mlx_rs::ops::arange::<_, i32>(0, keys, None)?.reshape(&[1, keys])?;
                Some(qi.ge(&ki)?)
            }
            // [L, S], or a merged cache's [B, 1, L, S]: one more axis for the groups.
            Mask::Array(a) if a.ndim() == 4 => Some(a.expand_dims(2)?),
            Mask::Array(a) => Some(a.clone()),
        };
        if let Some(m) = allowed {
            let low = Array::from_f32(-1e30).as_dtype(scores.dtype())?;
            scores = mlx_rs::ops::select(&m, &scores, &low)?;
        }
        let probs = match sinks {
            // A learned logit per head joins the softmax, then leaves it.
            Some(s) => {
                let s = s.as_dtype(scores.dtype())?.reshape(&[1, kv_heads, rep, 1, 1])?;
                let s = mlx_rs::ops::broadcast_to(&s, &[b, kv_heads, rep, l, 1])?;
                let p = mlx_rs::ops::softmax_axis(&mlx_rs::ops::concatenate(&[s, scores], -1)?, -1, true)?;
                p.index((.., .., .., .., 1..))
            }
            None => mlx_rs::ops::softmax_axis(&scores, -1, true)?,
        };
        let out = weigh(&probs.as_dtype(q.dtype())?)?;
        Ok(out.reshape(&[b, heads, l, d])?)
    }

    /// Scaled dot-product attention of `q` over `k`, `v` ([B, heads, S, D])
    /// under this mask, with optional learned sinks per head.
    /// A few queries (a turn's new tokens over a long cache, a speculative
    /// verification) go through MLX ops where `short_prefill_by_ops` says so.
    pub fn attend(&self, q: &Array, k: &Array, v: &Array, scale: f32, sinks: Option<&Array>) -> Result<Array> {
        let (k, v) = self.decode_keys(k, v).unwrap_or_else(|| (k.clone(), v.clone()));
        if short_prefill_by_ops(q.shape()[2]) {
            return self.attend_unfused(q, &k, &v, scale, sinks);
        }
        Ok(fast::scaled_dot_product_attention(q, &k, &v, scale, self.as_sdpa(), sinks)?)
    }

    /// `attend` as MLX ops (`attend_by_ops`), never the fused kernel.
    pub fn attend_unfused(&self, q: &Array, k: &Array, v: &Array, scale: f32, sinks: Option<&Array>) -> Result<Array> {
        let (kg, vg) = (k.expand_dims(2)?, v.expand_dims(2)?);
        self.attend_by_ops(
            q,
            (k.shape()[1], k.shape()[2]),
            scale,
            sinks,
            |q| Ok(mlx_rs::ops::matmul(q, &kg.swap_axes(-1, -2)?)?),
            |p| Ok(mlx_rs::ops::matmul(p, &vg)?),
        )
    }
}

/// The most queries `short_prefill_by_ops` takes.
pub const SHORT_PREFILL: i32 = 128;

/// Whether attention of `l` queries (2 to `SHORT_PREFILL`) runs as MLX ops
/// instead of MLX's fused SDPA: on CUDA, where that SDPA hands several
/// queries to cuDNN, which builds and caches an execution graph per exact
/// query and key shape (`mlx/backend/cuda/scaled_dot_product_attention.cpp`);
/// every agent turn and every speculative verification has a key length no
/// earlier call had, so each paid a new graph. H100, Llama-3.1-8B shape, a
/// 20-turn agent session of 46-49 new tokens over 6.6-7.5k cached: 63-69 ms
/// in the engine per turn with cuDNN, 31-39 ms without
/// (`docs/bench/h100-agent-session-cudnn-off.txt`). Long prefill chunks
/// keep cuDNN, faster there once built (6,581 tokens 8,841 tok/s against
/// 7,129 without). Off with `HEARTH_SHORT_PREFILL_OPS=0` (`Switches`).
pub fn short_prefill_by_ops(l: i32) -> bool {
    l > 1 && l <= SHORT_PREFILL && crate::models::kernels::switches().short_prefill_ops
}

/// One mask per kind of layer (full and sliding), built once per forward pass
/// from the first cache of each kind: all layers of a kind hold the same
/// positions, so they share it.
pub struct LayerMasks([Option<Mask>; 2]);

impl LayerMasks {
    /// `kinds` pairs each layer's kind (0 full, 1 sliding) with its cache.
    pub fn build<'a>(l: i32, kinds: impl Iterator<Item = (bool, &'a mut crate::models::cache::Cache)>) -> Result<Self> {
        let mut masks = [None, None];
        for (sliding, c) in kinds {
            let kind = sliding as usize;
            if masks[kind].is_none() {
                masks[kind] = Some(attention_mask(l, c.as_kv()?)?);
            }
        }
        Ok(LayerMasks(masks))
    }

    pub fn get(&self, sliding: bool) -> Result<&Mask> {
        self.0[sliding as usize].as_ref().ok_or_else(|| crate::models::cfg_err("no mask for a layer kind"))
    }

    /// `build` for each row of a batch (`LanguageModel::forward`):
    /// `sliding[i]` is layer i's kind; each row must hold one cache per layer.
    pub fn build_rows(l: i32, sliding: &[bool], rows: &mut [&mut [crate::models::cache::Cache]]) -> Result<Vec<Self>> {
        rows.iter_mut()
            .map(|r| {
                if r.len() != sliding.len() {
                    return Err(crate::models::cfg_err(format!("{} caches for {} layers", r.len(), sliding.len())));
                }
                Self::build(l, sliding.iter().copied().zip(r.iter_mut()))
            })
            .collect()
    }

    /// Every row's mask for a layer of this kind.
    pub fn of_rows(rows: &[Self], sliding: bool) -> Result<Vec<&Mask>> {
        rows.iter().map(|m| m.get(sliding)).collect()
    }
}

/// The one mask of a hybrid model's attention layers (its other layers keep a
/// recurrent state and take none), from the first KV cache among `caches`,
/// after checking there is a cache for each of the model's `layers`.
pub fn hybrid_mask(l: i32, caches: &mut [crate::models::cache::Cache], layers: usize) -> Result<Mask> {
    if caches.len() != layers {
        return Err(crate::models::cfg_err(format!("{} caches for {} layers", caches.len(), layers)));
    }
    match caches.iter_mut().find(|c| !c.is_state()) {
        Some(c) => attention_mask(l, c.as_kv()?),
        None => Ok(Mask::None),
    }
}

/// Layer `i`'s KV cache of every row of a batch (`LanguageModel::forward`).
pub fn layer_kv<'a>(rows: &'a mut [&mut [crate::models::cache::Cache]], i: usize) -> Result<Vec<&'a mut KvCache>> {
    rows.iter_mut()
        .map(|r| r.get_mut(i).ok_or_else(|| crate::models::cfg_err(format!("no cache for layer {i}")))?.as_kv())
        .collect()
}

/// One mask per group of rows (a sequence's caches, or merged ones) for a
/// model whose attention layers all hold the same positions, from each
/// group's first cache, after checking each has a cache per layer.
pub fn row_masks(l: i32, rows: &mut [&mut [crate::models::cache::Cache]], layers: usize) -> Result<Vec<Mask>> {
    rows.iter_mut()
        .map(|r| {
            if r.len() != layers {
                return Err(crate::models::cfg_err(format!("{} caches for {} layers", r.len(), layers)));
            }
            attention_mask(l, r[0].as_kv()?)
        })
        .collect()
}

/// The mask for `l` new tokens written into `cache` (and every cache of the same
/// kind in the model: layers of one kind hold the same positions). A windowed
/// cache is trimmed first, so the mask matches the keys the layers will fetch.
pub fn attention_mask(l: i32, cache: &mut KvCache) -> Result<Mask> {
    if let Some(pads) = cache.pads() {
        // A merged cache: row r sees keys from its padding on, causally:
        // [rows, 1, l, keys], broadcast over the heads.
        let (offset, keys) = (cache.offset(), cache.offset() + l);
        let n = pads.len() as i32;
        let pad = Array::from_slice(pads, &[n, 1, 1, 1]);
        let kpos = mlx_rs::ops::arange::<_, i32>(0, keys, None)?.reshape(&[1, 1, 1, keys])?;
        let qpos = mlx_rs::ops::arange::<_, i32>(offset, keys, None)?.reshape(&[1, 1, l, 1])?;
        return Ok(Mask::Array(kpos.ge(&pad)?.logical_and(&kpos.le(&qpos)?)?));
    }
    cache.trim_window()?;
    let (start, offset) = (cache.start(), cache.offset());
    let end = offset + l;
    match cache.window() {
        // One query at `offset` sees the last `w` keys, which end at it.
        Some(w) if end - start > w && l == 1 => Ok(Mask::Recent(w)),
        Some(w) if end - start > w => {
            // Query at q sees keys k with k <= q and q - k < window.
            let qpos = mlx_rs::ops::arange::<_, i32>(offset, end, None)?.reshape(&[l, 1])?;
            let kpos = mlx_rs::ops::arange::<_, i32>(start, end, None)?.reshape(&[1, end - start])?;
            let causal = kpos.le(&qpos)?;
            let near = qpos.subtract(&kpos)?.lt(mlx_rs::array!(w))?;
            Ok(Mask::Array(causal.logical_and(&near)?))
        }
        _ if l > 1 => Ok(Mask::Causal),
        _ => Ok(Mask::None),
    }
}

