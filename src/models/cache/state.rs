//! The recurrent state of linear-attention and short-convolution layers
//! (mlx-lm's `ArraysCache`).

use crate::models::cache::{state_err, CacheKind, CacheState, LayerCache};
use crate::error::Result;
use mlx_rs::{ops, Array};

/// The recurrent state of a linear-attention or short-convolution layer:
/// `arrays[i]` as the layer defines them (Gated DeltaNet: the conv window
/// [B, K-1, conv_dim] and the state [B, Hv, Dv, Dk]; LFM2: the conv window).
#[derive(Clone, Default)]
pub struct StateCache {
    pub(super) arrays: Vec<Option<Array>>,
    pub(super) offset: i32,
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

impl LayerCache for StateCache {
    fn offset(&self) -> i32 {
        self.offset
    }
    fn rows(&self) -> usize {
        self.arrays().first().map_or(1, |a| a.shape().first().copied().unwrap_or(1).max(1) as usize)
    }
    /// A recurrent state summarises everything it saw: it goes back only
    /// to empty or to where it is (hybrid models keep snapshots instead).
    fn can_truncate(&self, len: i32) -> bool {
        len == 0 || len == self.offset
    }
    fn truncate(&mut self, len: i32) {
        if len != self.offset {
            self.clear();
        }
    }
    fn state(&self) -> CacheState {
        CacheState { kind: CacheKind::State, arrays: self.arrays.clone(), meta: vec![self.offset] }
    }
    fn set_state(&mut self, state: CacheState) -> Result<()> {
        match (state.kind, state.meta.as_slice()) {
            (CacheKind::State, [offset]) if *offset >= 0 && state.arrays.len() == self.arrays.len() => {
                *self = StateCache { arrays: state.arrays, offset: *offset };
                Ok(())
            }
            _ => Err(state_err(&format!("a state cache of {} slots and its offset expected", self.arrays.len()))),
        }
    }
    /// Each slot's rows along its first axis.
    fn filter(&mut self, keep: &[usize]) -> Result<()> {
        let rows = LayerCache::rows(self);
        if keep.is_empty() || keep.iter().any(|&r| r >= rows) {
            return Err(crate::error::Error::Config(format!("rows {keep:?} of a state of {rows} rows")));
        }
        let idx = Array::from_slice(&keep.iter().map(|&r| r as i32).collect::<Vec<_>>(), &[keep.len() as i32]);
        for a in self.arrays.iter_mut().flatten() {
            *a = a.take_axis(&idx, 0)?;
        }
        Ok(())
    }
    /// Both must have seen as many positions (a state has no padding).
    fn extend(&mut self, other: Self) -> Result<()> {
        if other.offset != self.offset || other.arrays.len() != self.arrays.len() {
            return Err(crate::error::Error::Config("only states at the same position and of the same slots join".into()));
        }
        for (a, b) in self.arrays.iter_mut().zip(other.arrays) {
            *a = match (a.take(), b) {
                (Some(a), Some(b)) => Some(ops::concatenate(&[a, b], 0)?),
                (None, None) => None,
                _ => return Err(crate::error::Error::Config("a state slot filled in one row and empty in the other".into())),
            };
        }
        Ok(())
    }
    fn arrays(&self) -> Vec<&Array> {
        StateCache::arrays(self)
    }
}
