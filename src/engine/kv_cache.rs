//! Key/value cache, allocated in steps and written in place.
//!
//! Concatenating one token's K/V onto the cache every step copies the whole
//! cache each token (O(n^2) over a reply). Instead the buffer grows in chunks
//! of `STEP` positions and each step writes its slice with `slice_update`,
//! which MLX performs in place when the buffer has no other reader.

use crate::error::Result;
use mlx_rs::ops::indexing::{IndexOp, TryIndexMutOp};
use mlx_rs::{ops, Array};

const STEP: i32 = 256;

#[derive(Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions held.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Forgets everything after `len` positions (for prompt-cache reuse); the
    /// buffer stays allocated and is overwritten by later writes.
    pub fn truncate(&mut self, len: i32) {
        self.offset = self.offset.min(len.max(0));
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Appends `k`, `v` ([B, heads, L, head_dim]) and returns all cached K, V.
    pub fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let prev = self.offset;
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
        keys.try_index_mut((.., .., prev..need, ..), k)?;
        values.try_index_mut((.., .., prev..need, ..), v)?;
        self.offset = need;
        Ok((
            keys.index((.., .., ..need, ..)),
            values.index((.., .., ..need, ..)),
        ))
    }

    /// Arrays to evaluate so the cache holds concrete data.
    pub fn arrays(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }

    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }
}
