//! A draft model for speculative decoding: a small model with the target's
//! tokenizer guesses the next few tokens greedily, and the target checks them
//! in one pass (`speculate`). The draft keeps one prompt cache, brought to
//! the sequence's tokens before each guess (its longest shared prefix is
//! kept, the rest prefilled), so it follows whichever sequence speculates
//! and rolls back with the target's rejections by itself.

use super::step::{self, PromptCache};
use crate::chat::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use crate::models::load::LoadedModel;
use crate::models::Head;
use mlx_rs::ops::indexing::argmax_axis;
use mlx_rs::Array;

pub struct Draft {
    pub loaded: LoadedModel,
    cache: PromptCache,
}

impl Draft {
    /// `loaded` as a draft for a target with tokenizer `target`: refused
    /// unless both tokenizers give every id the same bytes and end on the
    /// same tokens (its guesses would be other words), and for models with
    /// a recurrent state (their cache cannot roll back a rejected guess).
    pub fn new(loaded: LoadedModel, target: &TextTokenizer) -> Result<Self> {
        let name = &loaded.info.name;
        let tok = &loaded.tokenizer;
        let same_vocab = tok.vocab_size() == target.vocab_size() && (0..tok.vocab_size() as u32).all(|i| tok.bytes_of(i) == target.bytes_of(i) && tok.is_special(i) == target.is_special(i));
        if !same_vocab || tok.eos_ids != target.eos_ids {
            return Err(Error::InvalidArgument(format!("{name} cannot draft for this model: their tokenizers differ (a draft needs the same vocabulary)")));
        }
        let cache = PromptCache::new(loaded.model.as_ref());
        if cache.is_hybrid() {
            return Err(Error::InvalidArgument(format!("{name} cannot draft: its recurrent state cannot roll back rejected guesses")));
        }
        Ok(Draft { loaded, cache })
    }

    /// The draft's `k` greedy tokens after `history` (read at once: one
    /// wait for the whole guess, the steps queued on the device in turn).
    pub fn propose(&mut self, history: &[u32], k: usize, chunk: usize) -> Result<Vec<u32>> {
        if k == 0 || history.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.loaded.model.as_ref();
        let (logits, _) = step::prefill(model, &mut self.cache, history, chunk)?;
        let mut guess: Vec<Array> = Vec::with_capacity(k);
        let mut y = argmax_axis(&logits, -1, false)?.as_dtype(mlx_rs::Dtype::Int32)?;
        for _ in 1..k {
            guess.push(y.clone());
            let l = model.logits(&y.reshape(&[1, 1])?, &mut self.cache.layers, Head::Last(1));
            let l = match l {
                Ok(l) => l,
                Err(e) => {
                    self.cache.clear(model);
                    return Err(e);
                }
            };
            y = argmax_axis(&l, -1, false)?.as_dtype(mlx_rs::Dtype::Int32)?;
        }
        guess.push(y);
        let all = mlx_rs::ops::concatenate(&guess, 0)?;
        mlx_rs::transforms::eval([&all])?;
        let ids: Vec<u32> = all.as_slice::<i32>().iter().map(|&i| i as u32).collect();
        // Every guess but the last went through the cache.
        self.cache.tokens.extend_from_slice(&ids[..k - 1]);
        Ok(ids)
    }

    /// The draft's cache, emptied (a conversation switch).
    pub fn reset(&mut self) {
        self.cache.clear(self.loaded.model.as_ref());
    }
}
