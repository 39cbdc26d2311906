//! The caches models keep between forward passes, one per layer: the key/value
//! cache of attention layers, full or windowed (sliding-window layers), and the
//! state cache of linear-attention and short-convolution layers (a conv window
//! and a recurrent matrix, mlx-lm's `ArraysCache`). Each model says which kind
//! each layer needs (`LanguageModel::new_cache`), as mlx-lm's `make_cache`.
//!
//! A KV cache can be cut back to any earlier length (prompt-cache reuse); a
//! state cache cannot: it summarises everything it has seen. Hybrid models keep
//! `StateCache` snapshots instead (`engine::step`), which cost nothing to take:
//! MLX arrays are immutable, so a snapshot holds the arrays of that moment while
//! later steps make new ones.
//!
//! The KV cache is allocated in steps and written in place.
//!
//! Concatenating one token's K/V onto the cache every step copies the whole
//! cache each token (O(n^2) over a reply). Instead the buffer grows in chunks
//! of `STEP` positions and each step writes its slice with `slice_update`,
//! which MLX performs in place when the buffer has no other reader.

use crate::error::Result;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

const STEP: i32 = 256;

/// How many state snapshots a conversation keeps (`engine::step`; each costs
/// one copy of the model's recurrent state, and the fit estimate counts them).
pub const MAX_SNAPSHOTS: usize = 4;

#[derive(Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    /// Sliding-window layers (Gemma 3) keep only recent positions: when the
    /// buffer holds twice the window, the older half is dropped, so memory stays
    /// bounded however long the chat gets.
    window: Option<i32>,
    /// Absolute position of the buffer's first entry (0 unless windowed).
    start: i32,
    /// A merged cache of several sequences (`merge`): row r's keys start at
    /// `pads[r]` (left padding) and all end at `offset`, so one write and
    /// one attention serve every row. None for one sequence's cache.
    pads: Option<Vec<i32>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn windowed(window: i32) -> Self {
        KvCache { window: Some(window.max(1)), ..Self::default() }
    }

    /// Absolute position of the first key `update_and_fetch` returns.
    pub fn start(&self) -> i32 {
        self.start
    }

    /// Whether the cache still holds everything before `len` (a windowed cache
    /// may have dropped it, and then the prompt must be processed again).
    pub fn can_truncate(&self, len: i32) -> bool {
        len == 0 || len >= self.start
    }

    /// Number of positions held.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Forgets everything after `len` positions (for prompt-cache reuse); the
    /// buffer stays allocated and is overwritten by later writes.
    pub fn truncate(&mut self, len: i32) {
        if len < self.start {
            // Dropped positions cannot come back: start empty.
            self.clear();
            return;
        }
        self.offset = self.offset.min(len.max(0));
    }

    pub fn clear(&mut self) {
        *self = KvCache { window: self.window, ..Self::default() };
    }

    /// The sliding window, for windowed caches.
    pub fn window(&self) -> Option<i32> {
        self.window
    }

    /// Drops the older half of a windowed buffer once it holds twice the window,
    /// keeping what the next query may still see. The model calls it before
    /// building the mask; `update_and_fetch` calls it too (a no-op the second time).
    pub fn trim_window(&mut self) -> Result<()> {
        if let Some(w) = self.window {
            // The next query (at `offset`) still sees keys back to offset - w + 1.
            let keep_from = self.offset - w + 1;
            if self.offset - self.start >= 2 * w && keep_from > self.start {
                let from = keep_from - self.start;
                let to = self.offset - self.start;
                self.keys = self.keys.take().map(|a| a.index((.., .., from..to, ..)));
                self.values = self.values.take().map(|a| a.index((.., .., from..to, ..)));
                self.start = keep_from;
                // Materialize the kept slice so the dropped part is freed.
                mlx_rs::transforms::eval(self.arrays())?;
            }
        }
        Ok(())
    }

    /// Appends `k`, `v` ([B, heads, L, head_dim]) and returns all cached K, V.
    pub fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        self.trim_window()?;
        let prev = self.offset - self.start;
        let n = k.shape()[2];
        let need = prev + n;
        let capacity = self.keys.as_ref().map_or(0, |a| a.shape()[2]);
        if need > capacity {
            let (b, h, d_k) = (k.shape()[0], k.shape()[1], k.shape()[3]);
            let d_v = v.shape()[3];
            let grow = ((n + STEP - 1) / STEP) * STEP;
            let new_k = ops::zeros_dtype(&[b, h, grow, d_k], k.dtype())?;
            let new_v = ops::zeros_dtype(&[b, h, grow, d_v], v.dtype())?;
            match (self.keys.take(), self.values.take()) {
                (Some(old_k), Some(old_v)) => {
                    // Drop stale positions past `prev` before growing.
                    let old_k = old_k.index((.., .., ..prev, ..));
                    let old_v = old_v.index((.., .., ..prev, ..));
                    self.keys = Some(ops::concatenate(&[old_k, new_k], 2)?);
                    self.values = Some(ops::concatenate(&[old_v, new_v], 2)?);
                }
                _ => {
                    self.keys = Some(new_k);
                    self.values = Some(new_v);
                }
            }
        }
        let keys = self.keys.as_mut().expect("allocated above");
        let values = self.values.as_mut().expect("allocated above");
        *keys = write_at(keys, k, prev)?;
        *values = write_at(values, v, prev)?;
        self.offset = need + self.start;
        Ok((
            keys.index((.., .., ..need, ..)),
            values.index((.., .., ..need, ..)),
        ))
    }

    /// Arrays to evaluate so the cache holds concrete data.
    pub fn arrays(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }

    /// How many sequences the cache holds (1 unless merged).
    pub fn rows(&self) -> usize {
        self.pads.as_ref().map_or(1, |p| p.len())
    }

    /// The left padding of each row of a merged cache.
    pub fn pads(&self) -> Option<&[i32]> {
        self.pads.as_deref()
    }

    /// Each row's position for the next token, [rows] int32, for RoPE of a
    /// merged cache (None for one sequence's: its offset is the position).
    pub fn positions(&self) -> Option<Array> {
        let pads = self.pads.as_ref()?;
        let pos: Vec<i32> = pads.iter().map(|p| self.offset - p).collect();
        Some(Array::from_slice(&pos, &[pos.len() as i32]))
    }

    /// One cache for several sequences' caches (mlx-lm's `BatchKVCache`):
    /// each row's keys and values, left-padded with zeros to the longest,
    /// stacked along the batch axis. Windowed and merged caches are refused.
    pub fn merge(rows: Vec<KvCache>) -> Result<KvCache> {
        let idx = rows.iter().map(|c| c.offset).max().unwrap_or(0);
        if rows.is_empty() || idx == 0 || rows.iter().any(|c| c.window.is_some() || c.pads.is_some() || c.offset == 0) {
            return Err(crate::error::Error::Config("only filled, unwindowed single-sequence caches merge".into()));
        }
        let (mut ks, mut vs, mut pads) = (Vec::new(), Vec::new(), Vec::new());
        for c in &rows {
            let (Some(k), Some(v)) = (&c.keys, &c.values) else {
                return Err(crate::error::Error::Config("a cache with positions but no buffer".into()));
            };
            let pad = idx - c.offset;
            let left = |a: &Array| -> Result<Array> {
                let a = a.index((.., .., ..c.offset, ..));
                if pad == 0 {
                    return Ok(a);
                }
                let sh = a.shape();
                let z = ops::zeros_dtype(&[sh[0], sh[1], pad, sh[3]], a.dtype())?;
                Ok(ops::concatenate(&[z, a], 2)?)
            };
            ks.push(left(k)?);
            vs.push(left(v)?);
            pads.push(pad);
        }
        Ok(KvCache {
            keys: Some(ops::concatenate(&ks, 0)?),
            values: Some(ops::concatenate(&vs, 0)?),
            offset: idx,
            window: None,
            start: 0,
            pads: Some(pads),
        })
    }

    /// The sequences' own caches back out of a merged cache (views of its
    /// rows without their padding), in row order.
    pub fn split(self) -> Vec<KvCache> {
        let (Some(k), Some(v), Some(pads)) = (self.keys, self.values, self.pads) else { return Vec::new() };
        pads.iter()
            .enumerate()
            .map(|(r, &pad)| {
                let r = r as i32;
                KvCache {
                    keys: Some(k.index((r..r + 1, .., pad..self.offset, ..))),
                    values: Some(v.index((r..r + 1, .., pad..self.offset, ..))),
                    offset: self.offset - pad,
                    ..KvCache::default()
                }
            })
            .collect()
    }

}

/// The recurrent state of a linear-attention or short-convolution layer:
/// `arrays[i]` as the layer defines them (Gated DeltaNet: the conv window
/// [B, K-1, conv_dim] and the state [B, Hv, Dv, Dk]; LFM2: the conv window).
#[derive(Clone, Default)]
pub struct StateCache {
    arrays: Vec<Option<Array>>,
    offset: i32,
}

impl StateCache {
    pub fn new(n: usize) -> Self {
        StateCache { arrays: vec![None; n], offset: 0 }
    }

    pub fn get(&self, i: usize) -> Option<&Array> {
        self.arrays.get(i).and_then(|a| a.as_ref())
    }

    /// Stores slot `i`; the model checks shapes before it writes.
    pub fn set(&mut self, i: usize, a: Array) {
        if i >= self.arrays.len() {
            self.arrays.resize(i + 1, None);
        }
        self.arrays[i] = Some(a);
    }

    /// Counts `n` more positions seen.
    pub fn advance(&mut self, n: i32) {
        self.offset += n;
    }

    pub fn offset(&self) -> i32 {
        self.offset
    }

    pub fn clear(&mut self) {
        let n = self.arrays.len();
        *self = StateCache::new(n);
    }

    pub fn arrays(&self) -> Vec<&Array> {
        self.arrays.iter().flatten().collect()
    }
}

/// One layer's cache.
pub enum Cache {
    Kv(KvCache),
    State(StateCache),
}

impl Cache {
    pub fn kv() -> Self {
        Cache::Kv(KvCache::new())
    }

    pub fn windowed(window: i32) -> Self {
        Cache::Kv(KvCache::windowed(window))
    }

    pub fn state(n: usize) -> Self {
        Cache::State(StateCache::new(n))
    }

    /// The KV cache of an attention layer; a typed error if the model paired
    /// the layer with another kind.
    pub fn as_kv(&mut self) -> Result<&mut KvCache> {
        match self {
            Cache::Kv(c) => Ok(c),
            Cache::State(_) => Err(crate::error::Error::Config("an attention layer was given a state cache".into())),
        }
    }

    pub fn as_state(&mut self) -> Result<&mut StateCache> {
        match self {
            Cache::State(c) => Ok(c),
            Cache::Kv(_) => Err(crate::error::Error::Config("a linear-attention layer was given a KV cache".into())),
        }
    }

    pub fn offset(&self) -> i32 {
        match self {
            Cache::Kv(c) => c.offset(),
            Cache::State(c) => c.offset(),
        }
    }

    /// Whether the cache can go back to holding exactly the first `len` positions.
    pub fn can_truncate(&self, len: i32) -> bool {
        match self {
            Cache::Kv(c) => c.can_truncate(len),
            Cache::State(c) => len == 0 || len == c.offset(),
        }
    }

    /// Cuts back to `len` positions; a state cache that cannot is emptied
    /// (callers check `can_truncate` first).
    pub fn truncate(&mut self, len: i32) {
        match self {
            Cache::Kv(c) => c.truncate(len),
            Cache::State(c) if len != c.offset() => c.clear(),
            Cache::State(_) => {}
        }
    }

    pub fn is_state(&self) -> bool {
        matches!(self, Cache::State(_))
    }

    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            Cache::Kv(c) => c.arrays(),
            Cache::State(c) => c.arrays(),
        }
    }
}

/// `buf` with `update` ([B, H, n, D]) written at position `at` of axis 2:
/// one `slice_update` (in place when `buf` has no other reader). Called
/// through mlx-c because mlx-rs's indexed assignment adds two reshapes of the
/// update per write, four graph ops per layer and token that the host
/// encodes one by one on CUDA.
fn write_at(buf: &Array, update: &Array, at: i32) -> Result<Array> {
    let shape = update.shape();
    if shape.len() != 4 {
        return Err(crate::error::Error::Mlx(format!("a KV cache update of shape {shape:?}; [B, heads, n, dim] expected")));
    }
    let start = [0, 0, at, 0];
    let stop = [shape[0], shape[1], at + shape[2], shape[3]];
    let strides = [1, 1, 1, 1];
    crate::models::mlx_c::call("slice_update", |res, s| unsafe {
        mlx_sys::mlx_slice_update(res, buf.as_ptr(), update.as_ptr(), start.as_ptr(), 4, stop.as_ptr(), 4, strides.as_ptr(), 4, s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::ops;

    fn kv(n: i32, at: f32) -> (Array, Array) {
        let k = ops::full::<f32>(&[1, 1, n, 2], mlx_rs::array!(at)).unwrap();
        (k.clone(), k)
    }

    #[test]
    fn grows_in_steps_and_truncates_for_reuse() {
        let mut c = KvCache::new();
        let (k, v) = kv(3, 1.0);
        let (ks, _) = c.update_and_fetch(&k, &v).unwrap();
        assert_eq!(ks.shape(), &[1, 1, 3, 2]);
        assert_eq!(c.offset(), 3);
        c.truncate(1);
        let (k, v) = kv(2, 2.0);
        let (ks, _) = c.update_and_fetch(&k, &v).unwrap();
        assert_eq!(ks.shape(), &[1, 1, 3, 2]);
        let got: Vec<f32> = ks.as_slice::<f32>().to_vec();
        assert_eq!(got, vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn windowed_cache_stays_bounded_and_refuses_lost_prefixes() {
        let mut c = KvCache::windowed(4);
        for i in 0..20 {
            let (k, v) = kv(1, i as f32);
            let (ks, _) = c.update_and_fetch(&k, &v).unwrap();
            assert!(ks.shape()[2] <= 2 * 4 + 1, "held {} positions", ks.shape()[2]);
        }
        assert_eq!(c.offset(), 20);
        assert!(c.start() > 0);
        assert!(!c.can_truncate(1), "the start of the prompt was dropped");
        assert!(c.can_truncate(c.offset()));
    }

    /// Two sequences' caches (3 and 5 positions) merge into one, left-padded
    /// to 5; a write lands at each row's next position; splitting gives each
    /// row exactly its own keys back.
    #[test]
    fn merged_caches_pad_left_and_split_back_exactly() {
        let mut a = KvCache::new();
        let mut b = KvCache::new();
        let (k, v) = kv(3, 1.0);
        a.update_and_fetch(&k, &v).unwrap();
        let (k, v) = kv(5, 2.0);
        b.update_and_fetch(&k, &v).unwrap();
        let mut m = KvCache::merge(vec![a, b]).unwrap();
        assert_eq!((m.rows(), m.offset(), m.pads()), (2, 5, Some(&[2, 0][..])));
        assert_eq!(m.positions().unwrap().as_slice::<i32>(), &[3, 5]);
        let k = ops::full::<f32>(&[2, 1, 1, 2], mlx_rs::array!(9.0f32)).unwrap();
        let (ks, _) = m.update_and_fetch(&k, &k).unwrap();
        assert_eq!(ks.shape(), &[2, 1, 6, 2]);
        let parts = m.split();
        let got: Vec<Vec<f32>> = parts.iter().map(|c| c.keys.as_ref().unwrap().as_slice::<f32>().to_vec()).collect();
        assert_eq!(got[0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 9.0]);
        assert_eq!(got[1], [2.0; 10].iter().copied().chain([9.0, 9.0]).collect::<Vec<_>>());
        assert_eq!((parts[0].offset(), parts[1].offset(), parts[0].rows()), (4, 6, 1));
        assert!(KvCache::merge(vec![KvCache::windowed(4)]).is_err(), "windowed caches do not merge");
    }

    #[test]
    fn a_state_cache_only_goes_back_to_empty_or_where_it_is() {
        let mut c = Cache::state(2);
        let Cache::State(s) = &mut c else { unreachable!() };
        s.set(1, ops::ones::<f32>(&[1, 2]).unwrap());
        s.advance(5);
        assert!(c.can_truncate(5) && c.can_truncate(0));
        assert!(!c.can_truncate(3), "a recurrent state cannot forget two positions");
        c.truncate(3);
        assert_eq!(c.offset(), 0);
        assert!(c.arrays().is_empty());
        assert!(Cache::state(1).as_kv().is_err() && Cache::kv().as_state().is_err());
    }
}
