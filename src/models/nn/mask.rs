//! The attention masks, built once per forward pass at model level (as
//! mlx-lm's `create_attention_mask`) and handed to every layer that shares
//! them: causal, sliding-window, one decode query past its window, and a
//! merged cache's left padding; and the per-row pieces a batched pass
//! hands each layer (`layer_kv`, `row_masks`).

use crate::models::cache::KvCache;
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

    /// Scaled dot-product attention of `q` over `k`, `v` ([B, heads, S, D])
    /// under this mask, with optional learned sinks per head.
    pub fn attend(&self, q: &Array, k: &Array, v: &Array, scale: f32, sinks: Option<&Array>) -> Result<Array> {
        let (k, v) = self.decode_keys(k, v).unwrap_or_else(|| (k.clone(), v.clone()));
        Ok(fast::scaled_dot_product_attention(q, &k, &v, scale, self.as_sdpa(), sinks)?)
    }
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

