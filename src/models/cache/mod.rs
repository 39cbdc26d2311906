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
//! Every kind answers one interface, `LayerCache` (mlx-lm's `_BaseCache`):
//! its position, cutting back (prompt reuse now, rejected draft tokens for
//! speculative decoding), its content as plain arrays and integers and back
//! (`state` / `set_state`: snapshots, files), and the batch's rows (`rows`,
//! `filter`, `extend`: sequences leaving and joining a merged cache).
//!
//! The KV cache is allocated in steps and written in place.
//!
//! Concatenating one token's K/V onto the cache every step copies the whole
//! cache each token (O(n^2) over a reply). Instead the buffer grows in chunks
//! of `STEP` positions and each step writes its slice with `slice_update`,
//! which MLX performs in place when the buffer has no other reader.

mod kv;
mod state;

pub use kv::{KvCache, KvParts};
pub use state::StateCache;

use crate::error::Result;
use mlx_rs::Array;

/// How many state snapshots a conversation keeps (`engine::step`; each costs
/// one copy of the model's recurrent state, and the fit estimate counts them).
pub const MAX_SNAPSHOTS: usize = 4;

/// A cache's content as plain values (mlx-lm's `state` and `meta_state`):
/// arrays (None where a slot is empty) and integers, enough to rebuild it
/// with `set_state`, to keep as a snapshot or to write to a file.
#[derive(Clone)]
pub struct CacheState {
    pub kind: CacheKind,
    pub arrays: Vec<Option<Array>>,
    pub meta: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    Kv,
    State,
}

/// What every layer cache answers, whatever it holds (module comment).
pub trait LayerCache {
    /// Positions seen: the next token's position.
    fn offset(&self) -> i32;
    /// Sequences held (1 unless merged).
    fn rows(&self) -> usize;
    /// Whether the cache can go back to holding exactly the first `len` positions.
    fn can_truncate(&self, len: i32) -> bool;
    /// Cuts back to `len` positions; a cache that cannot is emptied
    /// (callers check `can_truncate` first).
    fn truncate(&mut self, len: i32);
    /// The content as plain values.
    fn state(&self) -> CacheState;
    /// The content `state` gave, back; a state of another kind or shape is
    /// an error and leaves the cache as it was.
    fn set_state(&mut self, state: CacheState) -> Result<()>;
    /// Keeps only the rows `keep`, in that order (rows leaving a batch).
    fn filter(&mut self, keep: &[usize]) -> Result<()>;
    /// Appends `other`'s rows after its own (rows joining a batch).
    fn extend(&mut self, other: Self) -> Result<()>
    where
        Self: Sized;
    /// Arrays to evaluate so the cache holds concrete data.
    fn arrays(&self) -> Vec<&Array>;
}

/// The KV cache widths offered: the model's dtype (0), 8 or 4 bits.
pub const KV_BITS: [u8; 3] = [0, 8, 4];

/// How a quantized KV cache stores keys and values: `bits` (8 or 4) per
/// value, a scale and bias per `group_size` (64) values, MLX's affine mode
/// (mlx-lm's `QuantizedKVCache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuant {
    pub bits: i32,
    pub group_size: i32,
}

impl KvQuant {
    /// The quantization of `bits`-wide KV caches; None for 0 or a width
    /// not offered.
    pub fn new(bits: u8) -> Option<KvQuant> {
        matches!(bits, 4 | 8).then_some(KvQuant { bits: bits as i32, group_size: 64 })
    }
}

/// `layers` (a model's `new_cache`) with every full KV cache quantized as
/// `spec` says, as mlx-lm turns `KVCache`s into `QuantizedKVCache`s:
/// windowed caches keep their dtype (they stay small), state caches have no
/// keys. None leaves them all as they are.
pub fn quantize_kv(layers: Vec<Cache>, spec: Option<KvQuant>) -> Vec<Cache> {
    let Some(spec) = spec else { return layers };
    layers
        .into_iter()
        .map(|c| match c {
            Cache::Kv(kv) if kv.window().is_none() => Cache::Kv(KvCache::quantized(spec)),
            c => c,
        })
        .collect()
}

pub(crate) fn state_err(msg: &str) -> crate::error::Error {
    crate::error::Error::Config(format!("a cache state that does not fit: {msg}"))
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

    pub fn is_state(&self) -> bool {
        matches!(self, Cache::State(_))
    }

    pub fn kind(&self) -> CacheKind {
        match self {
            Cache::Kv(_) => CacheKind::Kv,
            Cache::State(_) => CacheKind::State,
        }
    }
}

impl LayerCache for Cache {
    fn offset(&self) -> i32 {
        match self {
            Cache::Kv(c) => c.offset,
            Cache::State(c) => c.offset,
        }
    }
    fn rows(&self) -> usize {
        match self {
            Cache::Kv(c) => LayerCache::rows(c),
            Cache::State(c) => LayerCache::rows(c),
        }
    }
    fn can_truncate(&self, len: i32) -> bool {
        match self {
            Cache::Kv(c) => LayerCache::can_truncate(c, len),
            Cache::State(c) => LayerCache::can_truncate(c, len),
        }
    }
    fn truncate(&mut self, len: i32) {
        match self {
            Cache::Kv(c) => LayerCache::truncate(c, len),
            Cache::State(c) => LayerCache::truncate(c, len),
        }
    }
    fn state(&self) -> CacheState {
        match self {
            Cache::Kv(c) => c.state(),
            Cache::State(c) => c.state(),
        }
    }
    fn set_state(&mut self, state: CacheState) -> Result<()> {
        match self {
            Cache::Kv(c) => c.set_state(state),
            Cache::State(c) => c.set_state(state),
        }
    }
    fn filter(&mut self, keep: &[usize]) -> Result<()> {
        match self {
            Cache::Kv(c) => c.filter(keep),
            Cache::State(c) => c.filter(keep),
        }
    }
    fn extend(&mut self, other: Self) -> Result<()> {
        match (self, other) {
            (Cache::Kv(a), Cache::Kv(b)) => a.extend(b),
            (Cache::State(a), Cache::State(b)) => a.extend(b),
            _ => Err(crate::error::Error::Config("a KV cache and a state cache do not join".into())),
        }
    }
    fn arrays(&self) -> Vec<&Array> {
        match self {
            Cache::Kv(c) => KvCache::arrays(c),
            Cache::State(c) => StateCache::arrays(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::ops;
    use mlx_rs::ops::indexing::IndexOp;

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
        let parts: Vec<KvCache> = (0..m.rows()).map(|r| m.extract(r).unwrap()).collect();
        assert!(m.extract(2).is_none(), "no row past the merged ones");
        let got: Vec<Vec<f32>> = parts.iter().map(|c| c.keys.as_ref().unwrap().dense().unwrap().as_slice::<f32>().to_vec()).collect();
        assert_eq!(got[0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 9.0]);
        assert_eq!(got[1], [2.0; 10].iter().copied().chain([9.0, 9.0]).collect::<Vec<_>>());
        assert_eq!((parts[0].offset(), parts[1].offset(), parts[0].rows()), (4, 6, 1));
        assert!(KvCache::merge(vec![KvCache::windowed(4)]).is_err(), "windowed caches do not merge");
    }

    fn held(c: &KvCache) -> Vec<f32> {
        let n = c.offset() - c.start();
        // Through a copy: a view into the buffer is not contiguous.
        c.keys.as_ref().map_or(vec![], |k| ops::flatten(k.dense().expect("not quantized").index((.., .., ..n, ..)).multiply(mlx_rs::array!(1.0f32)).unwrap(), None, None).unwrap().as_slice::<f32>().to_vec())
    }

    /// A KV cache (plain, windowed past its window, merged) and a state
    /// cache rebuilt from their `state` hold and do what the originals do;
    /// a state of another kind or shape is refused and changes nothing.
    #[test]
    fn every_cache_comes_back_from_its_state() {
        let mut windowed = KvCache::windowed(4);
        for i in 0..11 {
            let (k, v) = kv(1, i as f32);
            windowed.update_and_fetch(&k, &v).unwrap();
        }
        let mut plain = KvCache::new();
        let (k, v) = kv(5, 3.0);
        plain.update_and_fetch(&k, &v).unwrap();
        let mut short = KvCache::new();
        let (k, v) = kv(2, 4.0);
        short.update_and_fetch(&k, &v).unwrap();
        let merged = KvCache::merge(vec![plain.clone(), short]).unwrap();
        for (name, original) in [("plain", plain), ("windowed", windowed), ("merged", merged), ("empty", KvCache::new())] {
            let mut back = KvCache::windowed(99);
            back.set_state(original.state()).unwrap();
            assert_eq!((back.offset(), back.start(), back.window(), back.pads()), (original.offset(), original.start(), original.window(), original.pads()), "{name}");
            assert_eq!(held(&back), held(&original), "{name}");
            if original.offset() == 0 {
                continue;
            }
            let rows = original.rows() as i32;
            let next = ops::full::<f32>(&[rows, 1, 1, 2], mlx_rs::array!(7.0f32)).unwrap();
            let (mut a, mut b) = (original.clone(), back);
            let (ka, _) = a.update_and_fetch(&next, &next).unwrap();
            let (kb, _) = b.update_and_fetch(&next, &next).unwrap();
            let flat = |a: &Array| ops::flatten(a.multiply(mlx_rs::array!(1.0f32)).unwrap(), None, None).unwrap().as_slice::<f32>().to_vec();
            assert_eq!(flat(&ka), flat(&kb), "{name}: the next write");
        }
        let mut s = StateCache::new(2);
        s.set(0, ops::ones::<f32>(&[1, 3]).unwrap());
        s.advance(4);
        let mut back = StateCache::new(2);
        back.set_state(s.state()).unwrap();
        assert_eq!((back.offset(), back.arrays().len()), (4, 1));
        let mut c = KvCache::new();
        assert!(c.set_state(s.state()).is_err(), "a state cache's state into a KV cache");
        assert!(StateCache::new(3).set_state(s.state()).is_err(), "slots that do not match");
        let mut bad = KvCache::new().state();
        bad.meta = vec![5, 0, -1, 0, 0];
        assert!(c.set_state(bad).is_err() && c.offset() == 0, "positions without keys");
    }

    /// Rows leave a merged cache (`filter`: the shared padding goes, one
    /// row left is a plain cache) and join it (`extend`), each row keeping
    /// exactly its own keys.
    #[test]
    fn merged_rows_leave_and_join_with_their_own_keys() {
        let fill = |n: i32, at: f32| {
            let mut c = KvCache::new();
            let (k, v) = kv(n, at);
            c.update_and_fetch(&k, &v).unwrap();
            c
        };
        let (a, b, c) = (fill(3, 1.0), fill(6, 2.0), fill(2, 3.0));
        let mut m = KvCache::merge(vec![a.clone(), b, c.clone()]).unwrap();
        assert_eq!(m.pads(), Some(&[3, 0, 4][..]));
        LayerCache::filter(&mut m, &[2, 0]).unwrap();
        assert_eq!((m.rows(), m.offset(), m.pads()), (2, 3, Some(&[1, 0][..])), "the shared padding of 3 is gone");
        assert_eq!(held(&m.extract(0).unwrap()), held(&c));
        assert_eq!(held(&m.extract(1).unwrap()), held(&a));
        m.extend(fill(5, 4.0)).unwrap();
        assert_eq!((m.rows(), m.offset(), m.pads()), (3, 5, Some(&[3, 2, 0][..])));
        assert_eq!(held(&m.extract(2).unwrap()), vec![4.0; 10]);
        assert_eq!(held(&m.extract(0).unwrap()), held(&c));
        LayerCache::filter(&mut m, &[1]).unwrap();
        assert_eq!((m.rows(), m.offset(), m.pads()), (1, 3, None), "one row left is a plain cache");
        assert_eq!(held(&m), held(&a));
        assert!(LayerCache::filter(&mut m, &[1]).is_err() && LayerCache::filter(&mut m, &[]).is_err());
        // States join at the same position only, and leave by row.
        let state = |at: f32, seen: i32| {
            let mut s = StateCache::new(1);
            s.set(0, ops::full::<f32>(&[1, 2], mlx_rs::array!(at)).unwrap());
            s.advance(seen);
            s
        };
        let mut s = state(1.0, 4);
        s.extend(state(2.0, 4)).unwrap();
        assert_eq!(LayerCache::rows(&s), 2);
        assert!(s.extend(state(3.0, 5)).is_err(), "a state at another position");
        s.filter(&[1]).unwrap();
        assert_eq!(s.get(0).unwrap().as_slice::<f32>(), &[2.0, 2.0]);
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
