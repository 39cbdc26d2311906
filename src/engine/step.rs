//! The token loop (mlx-lm's `generate_step`): reuse the cached prefix of the
//! prompt, prefill the rest in chunks, then sample token after token, queueing
//! step n+1 on the device (`async_eval`) before token n is read on the host.
//! It knows nothing of text: the caller decides after each token whether to go on.

use super::sampling::Sampler;
use crate::error::{Error, Result};
use crate::models::cache::KvCache;
use crate::models::layers::token_array;
use crate::models::{prefill_chunk, LanguageModel};
use mlx_rs::transforms::{async_eval, eval};
use mlx_rs::Array;

/// The model's caches and the tokens they hold, kept between requests.
pub struct PromptCache {
    pub layers: Vec<KvCache>,
    pub tokens: Vec<u32>,
}

/// Why the token loop ended on its own (the caller may also stop it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// The caller said stop.
    Stopped,
    MaxTokens,
    ContextFull,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs the part of `prompt` the cache does not hold yet; returns the logits of
/// the last position and how many prompt tokens were reused. On a model error
/// the cache is emptied, since it may hold half a chunk.
pub fn prefill(model: &dyn LanguageModel, cache: &mut PromptCache, prompt: &[u32]) -> Result<(Array, usize)> {
    // Reuse the cached prefix; at least one token must run to get logits.
    let reuse = common_prefix(&cache.tokens, prompt).min(prompt.len().saturating_sub(1));
    // A sliding-window cache may have dropped part of the prefix: start over.
    let reuse = if cache.layers.iter().all(|c| c.can_truncate(reuse as i32)) { reuse } else { 0 };
    for c in &mut cache.layers {
        c.truncate(reuse as i32);
    }
    cache.tokens.truncate(reuse);
    let rest = &prompt[reuse..];
    let chunk_len = prefill_chunk();
    let n_chunks = rest.len().div_ceil(chunk_len);
    let mut logits = None;
    for (i, chunk) in rest.chunks(chunk_len).enumerate() {
        let out = match model.forward(&token_array(chunk), &mut cache.layers, false) {
            Ok(o) => o,
            Err(e) => {
                *cache = PromptCache { layers: model.new_cache(), tokens: Vec::new() };
                return Err(e);
            }
        };
        cache.tokens.extend_from_slice(chunk);
        if i + 1 < n_chunks {
            eval(cache.layers.iter().flat_map(|c| c.arrays()))?;
        } else {
            logits = Some(out);
        }
    }
    let logits = logits.ok_or(Error::EmptyPrompt)?;
    Ok((logits, reuse))
}

/// Samples from `logits`, then decodes up to `max_tokens` tokens in all, calling
/// `on_token` with each id as soon as it is read; `on_token` returns false to stop.
/// The cache ends up holding every token that was fed back to the model.
pub fn decode(
    model: &dyn LanguageModel,
    cache: &mut PromptCache,
    context_length: usize,
    logits: &Array,
    sampler: &mut Sampler,
    max_tokens: usize,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<LoopEnd> {
    let mut y = sampler.sample(logits)?;
    async_eval([&y])?;
    let mut n = 0;
    loop {
        let room = cache.tokens.len() + 1 < context_length;
        let more = n + 1 < max_tokens && room;
        // Queue the next step before reading this token: the device works
        // on step n+1 while the host handles token n.
        let next = if more {
            let l = model.forward(&y.reshape(&[1, 1])?, &mut cache.layers, false)?;
            let nx = sampler.sample(&l)?;
            async_eval([&nx])?;
            Some(nx)
        } else {
            None
        };
        let id = y.try_item_exact::<i32>().map_err(|e| Error::Mlx(e.to_string()))? as u32;
        n += 1;
        if next.is_some() {
            cache.tokens.push(id);
        }
        if !on_token(id) {
            return Ok(LoopEnd::Stopped);
        }
        match next {
            Some(nx) => y = nx,
            None => return Ok(if room { LoopEnd::MaxTokens } else { LoopEnd::ContextFull }),
        }
    }
}

/// Finishes queued work so the cache is concrete for the next turn.
pub fn settle(cache: &PromptCache) -> Result<()> {
    Ok(eval(cache.layers.iter().flat_map(|c| c.arrays()))?)
}
