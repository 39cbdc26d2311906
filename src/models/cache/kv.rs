//! The key/value cache of an attention layer: full or windowed, one
//! sequence's or several merged (left-padded rows, mlx-lm's `BatchKVCache`),
//! in the model's dtype or quantized (mlx-lm's `QuantizedKVCache`: 8 or 4
//! bits, a scale and bias per group of 64), allocated in steps and written in
//! place (the module comment of `cache`).

use crate::models::cache::{state_err, CacheKind, CacheState, LayerCache};
use crate::models::cache::KvQuant;
use crate::error::Result;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

const STEP: i32 = 256;

/// Keys or values as stored: the array itself, or quantized, its packed
/// values, scales and biases. Every part is [B, heads, positions, ·], so
/// cutting positions, padding and picking rows apply to each part alike.
#[derive(Clone)]
pub struct KvParts(pub Vec<Array>);

impl KvParts {
    fn map(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<KvParts> {
        Ok(KvParts(self.0.iter().map(f).collect::<Result<_>>()?))
    }

    /// The array itself, for a cache that is not quantized.
    pub fn dense(&self) -> Option<&Array> {
        match self.0.as_slice() {
            [a] => Some(a),
            _ => None,
        }
    }

    /// Positions held (axis 2).
    pub fn positions_held(&self) -> i32 {
        self.0[0].shape()[2]
    }

    /// Positions `from..to` (views).
    pub fn positions(&self, from: i32, to: i32) -> KvParts {
        KvParts(self.0.iter().map(|a| a.index((.., .., from..to, ..))).collect())
    }

    fn rows(&self) -> i32 {
        self.0[0].shape()[0]
    }
}

#[derive(Default, Clone)]
pub struct KvCache {
    pub(super) keys: Option<KvParts>,
    pub(super) values: Option<KvParts>,
    /// Keys and values quantized as they are written (None: the model's dtype).
    pub(super) quant: Option<KvQuant>,
    pub(super) offset: i32,
    /// Sliding-window layers (Gemma 3) keep only recent positions: when the
    /// buffer holds twice the window, the older half is dropped, so memory stays
    /// bounded however long the chat gets.
    pub(super) window: Option<i32>,
    /// Absolute position of the buffer's first entry (0 unless windowed).
    pub(super) start: i32,
    /// A merged cache of several sequences (`merge`): row r's keys start at
    /// `pads[r]` (left padding) and all end at `offset`, so one write and
    /// one attention serve every row. None for one sequence's cache.
    pub(super) pads: Option<Vec<i32>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn windowed(window: i32) -> Self {
        KvCache { window: Some(window.max(1)), ..Self::default() }
    }

    /// A full cache that stores keys and values quantized with `spec`.
    pub fn quantized(spec: KvQuant) -> Self {
        KvCache { quant: Some(spec), ..Self::default() }
    }

    /// How keys and values are quantized, if they are.
    pub fn quant(&self) -> Option<KvQuant> {
        self.quant
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
        *self = KvCache { window: self.window, quant: self.quant, ..Self::default() };
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
                self.keys = self.keys.take().map(|a| a.positions(from, to));
                self.values = self.values.take().map(|a| a.positions(from, to));
                self.start = keep_from;
                // Materialize the kept slice so the dropped part is freed.
                mlx_rs::transforms::eval(self.arrays())?;
            }
        }
        Ok(())
    }

    /// Appends `k`, `v` ([B, heads, L, head_dim]) and returns all cached K,
    /// V; for a cache in the model's dtype (a quantized one is read through
    /// `update_and_fetch_parts`).
    pub fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let (k, v) = self.update_and_fetch_parts(k, v)?;
        match (k.dense(), v.dense()) {
            (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
            _ => Err(crate::error::Error::Config("this attention layer cannot read a quantized KV cache".into())),
        }
    }

    /// Appends `k`, `v` ([B, heads, L, head_dim]), quantized first if the
    /// cache is, and returns all cached keys and values as stored.
    pub fn update_and_fetch_parts(&mut self, k: &Array, v: &Array) -> Result<(KvParts, KvParts)> {
        self.trim_window()?;
        let store = |a: &Array| -> Result<KvParts> {
            Ok(match self.quant {
                None => KvParts(vec![a.clone()]),
                Some(q) => {
                    let (w, s, b) = ops::quantize(a, q.group_size, q.bits)?;
                    KvParts(vec![w, s, b])
                }
            })
        };
        let (k, v) = (store(k)?, store(v)?);
        let prev = self.offset - self.start;
        let n = k.positions_held();
        let need = prev + n;
        let capacity = self.keys.as_ref().map_or(0, KvParts::positions_held);
        if need > capacity {
            let grow = ((n + STEP - 1) / STEP) * STEP;
            let room = |p: &Array| -> Result<Array> {
                let sh = p.shape();
                Ok(ops::zeros_dtype(&[sh[0], sh[1], grow, sh[3]], p.dtype())?)
            };
            let (new_k, new_v) = (k.map(room)?, v.map(room)?);
            match (self.keys.take(), self.values.take()) {
                (Some(old_k), Some(old_v)) => {
                    // Drop stale positions past `prev` before growing.
                    let join = |old: KvParts, new: KvParts| -> Result<KvParts> {
                        let old = old.positions(0, prev);
                        Ok(KvParts(old.0.into_iter().zip(new.0).map(|(o, n)| ops::concatenate(&[o, n], 2)).collect::<std::result::Result<_, _>>()?))
                    };
                    self.keys = Some(join(old_k, new_k)?);
                    self.values = Some(join(old_v, new_v)?);
                }
                _ => {
                    self.keys = Some(new_k);
                    self.values = Some(new_v);
                }
            }
        }
        let write = |buf: &mut KvParts, update: &KvParts| -> Result<()> {
            for (b, u) in buf.0.iter_mut().zip(&update.0) {
                *b = write_at(b, u, prev)?;
            }
            Ok(())
        };
        write(self.keys.as_mut().expect("allocated above"), &k)?;
        write(self.values.as_mut().expect("allocated above"), &v)?;
        self.offset = need + self.start;
        let held = |a: &Option<KvParts>| a.as_ref().expect("allocated above").positions(0, need);
        Ok((held(&self.keys), held(&self.values)))
    }

    /// Arrays to evaluate so the cache holds concrete data.
    pub fn arrays(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).flat_map(|p| p.0.iter()).collect()
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

    /// One cache for several caches' rows (mlx-lm's `BatchKVCache`): each
    /// part's keys and values, left-padded with zeros to the longest, stacked
    /// along the batch axis in order. A part may itself be merged (its rows
    /// keep their padding, plus the new). Windowed and empty caches are refused.
    pub fn merge(rows: Vec<KvCache>) -> Result<KvCache> {
        let idx = rows.iter().map(|c| c.offset).max().unwrap_or(0);
        if rows.is_empty() || idx == 0 || rows.iter().any(|c| c.window.is_some() || c.offset == 0 || c.quant != rows[0].quant) {
            return Err(crate::error::Error::Config("only filled, unwindowed caches stored alike merge".into()));
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
            ks.push(k.map(left)?);
            vs.push(v.map(left)?);
            match &c.pads {
                Some(p) => pads.extend(p.iter().map(|x| x + pad)),
                None => pads.push(pad),
            }
        }
        // Part i of every row, stacked along the batch axis.
        let stack = |list: Vec<KvParts>| -> Result<KvParts> {
            let n = list[0].0.len();
            let parts = (0..n).map(|i| ops::concatenate(&list.iter().map(|p| p.0[i].clone()).collect::<Vec<_>>(), 0)).collect::<std::result::Result<_, _>>()?;
            Ok(KvParts(parts))
        };
        Ok(KvCache {
            keys: Some(stack(ks)?),
            values: Some(stack(vs)?),
            quant: rows[0].quant,
            offset: idx,
            window: None,
            start: 0,
            pads: Some(pads),
        })
    }

    /// Row `r`'s own cache out of a merged one (a view of its keys without
    /// its padding); None past the rows.
    pub fn extract(&self, r: usize) -> Option<KvCache> {
        let (k, v, pad) = (self.keys.as_ref()?, self.values.as_ref()?, *self.pads.as_ref()?.get(r)?);
        let r = r as i32;
        let row = |p: &KvParts| KvParts(p.0.iter().map(|a| a.index((r..r + 1, .., pad..self.offset, ..))).collect());
        Some(KvCache {
            keys: Some(row(k)),
            values: Some(row(v)),
            quant: self.quant,
            offset: self.offset - pad,
            ..KvCache::default()
        })
    }

    /// The rows `keep` of a merged cache, in that order, without the left
    /// padding they all share; one row left is a plain cache again. The
    /// cache itself is left as it is (a caller can drop the result on error).
    pub fn filtered(&self, keep: &[usize]) -> Result<KvCache> {
        let mut c = self.clone();
        c.filter_rows(keep)?;
        Ok(c)
    }

    fn filter_rows(&mut self, keep: &[usize]) -> Result<()> {
        let pads = self.pads.clone().unwrap_or_else(|| vec![0]);
        if keep.is_empty() || keep.iter().any(|&r| r >= pads.len()) {
            return Err(crate::error::Error::Config(format!("rows {keep:?} of a cache of {} rows", pads.len())));
        }
        let mut pads: Vec<i32> = keep.iter().map(|&r| pads[r]).collect();
        let shared = pads.iter().copied().min().unwrap_or(0);
        if let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) {
            let idx = Array::from_slice(&keep.iter().map(|&r| r as i32).collect::<Vec<_>>(), &[keep.len() as i32]);
            let same = keep.len() == k.rows() as usize && keep.iter().enumerate().all(|(i, &r)| i == r);
            let cut = |a: &Array| -> Result<Array> {
                let a = if same { a.clone() } else { a.take_axis(&idx, 0)? };
                Ok(if shared > 0 { a.index((.., .., shared..self.offset, ..)) } else { a })
            };
            self.keys = Some(k.map(cut)?);
            self.values = Some(v.map(cut)?);
        }
        self.offset -= shared;
        pads.iter_mut().for_each(|p| *p -= shared);
        self.pads = if pads.len() > 1 { Some(pads) } else { None };
        Ok(())
    }
}

impl LayerCache for KvCache {
    fn offset(&self) -> i32 {
        self.offset
    }
    fn rows(&self) -> usize {
        KvCache::rows(self)
    }
    fn can_truncate(&self, len: i32) -> bool {
        KvCache::can_truncate(self, len)
    }
    fn truncate(&mut self, len: i32) {
        KvCache::truncate(self, len)
    }
    /// The held positions only (not the buffer's spare room): the keys'
    /// parts then the values' (one each, or packed values, scales and biases
    /// when quantized); meta is [offset, start, window or -1, bits (0 when
    /// not quantized), group size, then each row's padding if merged].
    fn state(&self) -> CacheState {
        let held = self.offset - self.start;
        let n = if self.quant.is_some() { 3 } else { 1 };
        let parts = |p: &Option<KvParts>| -> Vec<Option<Array>> {
            match p {
                Some(p) => p.positions(0, held).0.into_iter().map(Some).collect(),
                None => vec![None; n],
            }
        };
        let mut arrays = parts(&self.keys);
        arrays.extend(parts(&self.values));
        let (bits, group) = self.quant.map_or((0, 0), |q| (q.bits, q.group_size));
        let mut meta = vec![self.offset, self.start, self.window.unwrap_or(-1), bits, group];
        meta.extend(self.pads.iter().flatten());
        CacheState { kind: CacheKind::Kv, arrays, meta }
    }
    fn set_state(&mut self, state: CacheState) -> Result<()> {
        let CacheState { kind: CacheKind::Kv, arrays, meta } = state else { return Err(state_err("not a KV cache's")) };
        let [offset, start, window, bits, group, pads @ ..] = meta.as_slice() else {
            return Err(state_err("a KV cache's meta has offset, start, window and quantization"));
        };
        let quant = match bits {
            0 => None,
            b => Some(KvQuant::new(*b as u8).filter(|q| q.group_size == *group).ok_or_else(|| state_err("a KV cache quantized to a width Hearth does not offer"))?),
        };
        let n = if quant.is_some() { 3 } else { 1 };
        if arrays.len() != 2 * n {
            return Err(state_err("a KV cache has keys and values"));
        }
        let held = offset - start;
        let rows = if pads.is_empty() { 1 } else { pads.len() as i32 };
        let fits = |a: &Option<Array>| match a {
            Some(a) => a.ndim() == 4 && a.shape()[0] == rows && a.shape()[2] == held,
            None => held == 0,
        };
        if *start < 0 || held < 0 || !arrays.iter().all(fits) || pads.iter().any(|p| !(0..=*offset).contains(p)) {
            return Err(state_err(&format!("{rows} rows of {held} positions expected")));
        }
        let gather = |a: &[Option<Array>]| -> Option<KvParts> { a.iter().cloned().collect::<Option<Vec<_>>>().map(KvParts) };
        *self = KvCache {
            keys: gather(&arrays[..n]),
            values: gather(&arrays[n..]),
            quant,
            offset: *offset,
            window: (*window > 0).then_some(*window),
            start: *start,
            pads: (!pads.is_empty()).then(|| pads.to_vec()),
        };
        Ok(())
    }
    fn filter(&mut self, keep: &[usize]) -> Result<()> {
        self.filter_rows(keep)
    }
    fn extend(&mut self, other: Self) -> Result<()> {
        let this = std::mem::take(self);
        *self = KvCache::merge(vec![this, other])?;
        Ok(())
    }
    fn arrays(&self) -> Vec<&Array> {
        KvCache::arrays(self)
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
