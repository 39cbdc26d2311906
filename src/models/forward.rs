//! The one call every architecture answers (`LanguageModel::forward`): what a
//! pass reads (`Input`: token ids, or embeddings spliced in their place), what
//! it runs against (`ForwardCtx`: each row's caches and which outputs are
//! wanted) and what it returns (`Output`: logits for the positions asked for,
//! or the hidden states for embedding models).
//!
//! Rows are sequences: row b of the input reads and appends to `rows[b]`'s
//! caches, so sequences join and leave a batch between passes (continuous
//! batching), and a row computes what it computes alone. A merged cache
//! (`KvCache::merge`) stands for several rows at once.

use crate::error::{Error, Result};
use crate::models::cache::{Cache, LayerCache};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;

/// What a forward pass reads, as mlx-vlm hands a language model `input_ids`
/// and, for images, `inputs_embeds`.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// Token ids, [B, L] int32. Present even when `embeddings` replaces the
    /// lookup: a family may read the ids for more than their embedding
    /// (Gemma 4's per-layer inputs).
    pub tokens: &'a Array,
    /// [B, L, hidden] in place of the token embedding lookup (image features
    /// spliced between the text's embeddings). The family's own scaling of
    /// embeddings applies to these too, as in its reference.
    pub embeddings: Option<&'a Array>,
}

impl<'a> Input<'a> {
    pub fn tokens(tokens: &'a Array) -> Self {
        Input { tokens, embeddings: None }
    }

    pub fn with_embeddings(self, embeddings: &'a Array) -> Self {
        Input { embeddings: Some(embeddings), ..self }
    }

    /// Rows and positions, (B, L).
    pub fn dims(&self) -> Result<(i32, i32)> {
        match self.tokens.shape() {
            [b, l] if *b > 0 && *l > 0 => Ok((*b, *l)),
            s => Err(Error::Config(format!("token ids of shape {s:?}; [rows, positions] expected"))),
        }
    }

    /// The first hidden state: `embeddings` where given (checked against the
    /// ids' shape and the model's width), else `lookup` of the ids.
    pub fn embed(&self, hidden: i32, lookup: impl FnOnce(&Array) -> Result<Array>) -> Result<Array> {
        let (b, l) = self.dims()?;
        match self.embeddings {
            None => lookup(self.tokens),
            Some(e) if e.shape() == [b, l, hidden] => Ok(e.clone()),
            Some(e) => Err(Error::Config(format!("embeddings of shape {:?} for {b} x {l} token ids of width {hidden}", e.shape()))),
        }
    }

    /// Row `r` alone, as a one-row input.
    fn row(&self, r: i32) -> (Array, Option<Array>) {
        (self.tokens.index(r..r + 1), self.embeddings.map(|e| e.index(r..r + 1)))
    }
}

/// Which outputs a pass computes. The output head is the costliest matmul
/// of a small model, so a prefill asks for one position, not L.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Logits of each row's last `n` positions: [B, vocab] for n = 1 (a
    /// prefill's end, a decode step), [B, n, vocab] otherwise (speculative
    /// verification reads several).
    Last(i32),
    /// Logits at every position, [B, L, vocab] (parity checks, scoring).
    All,
    /// The final normed hidden states, [B, L, hidden], and no output head
    /// (embedding models pool these).
    Hidden,
}

impl Head {
    /// The positions of `h` ([B, L, D]) this head reads.
    pub fn positions(self, h: &Array) -> Result<Array> {
        let l = h.shape()[1];
        match self {
            Head::Last(n) if (1..=l).contains(&n) => Ok(if n == l { h.clone() } else { h.index((.., (l - n)..l, ..)) }),
            Head::Last(n) => Err(Error::Config(format!("logits for the last {n} positions of a pass over {l}"))),
            Head::All | Head::Hidden => Ok(h.clone()),
        }
    }

    /// Logits ([B, n, vocab]) shaped as this head returns them.
    pub fn shape_logits(self, logits: Array) -> Result<Array> {
        Ok(match self {
            Head::Last(1) => logits.reshape(&[logits.shape()[0], -1])?,
            _ => logits,
        })
    }
}

/// What a pass returns.
pub enum Output {
    /// As `Head::Last` or `Head::All` shapes them.
    Logits(Array),
    /// `Head::Hidden`'s states.
    Hidden(Array),
}

impl Output {
    pub fn logits(self) -> Result<Array> {
        match self {
            Output::Logits(a) => Ok(a),
            Output::Hidden(_) => Err(Error::Config("a pass asked for hidden states was read as logits".into())),
        }
    }

    pub fn hidden(self) -> Result<Array> {
        match self {
            Output::Hidden(a) => Ok(a),
            Output::Logits(_) => Err(Error::Config("a pass asked for logits was read as hidden states".into())),
        }
    }
}

/// What a pass runs against: each row's caches, appended to, and the
/// outputs wanted. Positions come from the caches (each row's offset).
pub struct ForwardCtx<'a, 'c> {
    /// `rows[b]`: the caches of row b (one per layer, from `new_cache`), or
    /// of several rows merged (`KvCache::merge`), in row order.
    pub rows: &'a mut [&'c mut [Cache]],
    pub head: Head,
}

impl<'a, 'c> ForwardCtx<'a, 'c> {
    pub fn new(rows: &'a mut [&'c mut [Cache]], head: Head) -> Self {
        ForwardCtx { rows, head }
    }

    /// How many sequences the caches hold (a merged cache counts its rows).
    pub fn sequences(&self) -> usize {
        self.rows.iter().map(|r| r.first().map_or(1, Cache::rows)).sum()
    }

    /// Each row's position for its next token (its caches' offset).
    pub fn offsets(&self) -> Vec<i32> {
        self.rows.iter().map(|r| r.first().map_or(0, Cache::offset)).collect()
    }

    /// The pass one row at a time, for families whose layers keep per-row
    /// state a single pass cannot share (`one` runs a one-row input against
    /// one row's caches); the outputs are stacked in row order. Serves the
    /// same requests as a shared pass, without sharing the weight reads.
    pub fn each_row(&mut self, input: Input, mut one: impl FnMut(Input, &mut [Cache], Head) -> Result<Output>) -> Result<Output> {
        let (b, _) = input.dims()?;
        if self.rows.len() != b as usize || self.sequences() != b as usize {
            return Err(Error::Config(format!("{b} rows of input for {} caches of {} sequences", self.rows.len(), self.sequences())));
        }
        if b == 1 {
            return one(input, self.rows[0], self.head);
        }
        let (mut logits, mut hidden) = (Vec::new(), Vec::new());
        for (r, caches) in self.rows.iter_mut().enumerate() {
            let (t, e) = input.row(r as i32);
            let row = Input { tokens: &t, embeddings: e.as_ref() };
            match one(row, caches, self.head)? {
                Output::Logits(a) => logits.push(a),
                Output::Hidden(a) => hidden.push(a),
            }
        }
        Ok(match (logits.is_empty(), hidden.is_empty()) {
            (false, true) => Output::Logits(mlx_rs::ops::concatenate(&logits, 0)?),
            (true, false) => Output::Hidden(mlx_rs::ops::concatenate(&hidden, 0)?),
            _ => return Err(Error::Config("rows of one pass returned different outputs".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_pick_their_positions_and_shapes() {
        let h = mlx_rs::ops::arange::<_, f32>(0.0, 24.0, None).unwrap().reshape(&[2, 4, 3]).unwrap();
        assert_eq!(Head::Last(1).positions(&h).unwrap().shape(), &[2, 1, 3]);
        let two = Head::Last(2).positions(&h).unwrap();
        assert_eq!(two.shape(), &[2, 2, 3]);
        assert_eq!(two.index((0, 0, 0)).item_exact::<f32>(), 6.0, "the second-to-last position of row 0");
        assert_eq!(Head::All.positions(&h).unwrap().shape(), &[2, 4, 3]);
        assert!(Head::Last(5).positions(&h).is_err() && Head::Last(0).positions(&h).is_err());
        let one = Head::Last(1).shape_logits(Head::Last(1).positions(&h).unwrap()).unwrap();
        assert_eq!(one.shape(), &[2, 3]);
    }

    #[test]
    fn embeddings_replace_the_lookup_only_at_the_right_shape() {
        let ids = Array::from_slice(&[1i32, 2, 3], &[1, 3]);
        let e = mlx_rs::ops::ones::<f32>(&[1, 3, 4]).unwrap();
        let looked = |_: &Array| Ok(mlx_rs::ops::zeros::<f32>(&[1, 3, 4]).unwrap());
        let got = Input::tokens(&ids).with_embeddings(&e).embed(4, looked).unwrap();
        assert_eq!(got.sum(None).unwrap().item_exact::<f32>(), 12.0);
        assert_eq!(Input::tokens(&ids).embed(4, looked).unwrap().sum(None).unwrap().item_exact::<f32>(), 0.0);
        let err = Input::tokens(&ids).with_embeddings(&e).embed(8, looked).err().unwrap().to_string();
        assert!(err.contains("width 8"), "{err}");
        let flat = Array::from_slice(&[1i32, 2], &[2]);
        assert!(Input::tokens(&flat).dims().is_err());
    }
}
