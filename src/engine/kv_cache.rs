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
    /// Sliding-window layers (Gemma 3) keep only recent positions: when the
    /// buffer holds twice the window, the older half is dropped, so memory stays
    /// bounded however long the chat gets.
    window: Option<i32>,
    /// Absolute position of the buffer's first entry (0 unless windowed).
    start: i32,
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

    /// Appends `k`, `v` ([B, heads, L, head_dim]) and returns all cached K, V.
    pub fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
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
                let kept: Vec<&Array> = self.arrays();
                mlx_rs::transforms::eval(kept)?;
            }
        }
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
        keys.try_index_mut((.., .., prev..need, ..), k)?;
        values.try_index_mut((.., .., prev..need, ..), v)?;
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

    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }
}
