//! The generation loop: prompt-cache reuse, chunked prefill, and a decode loop
//! that queues step n+1 on the device (async_eval) before reading token n.

use super::detokenize::{StopCheck, StopMatcher, StreamingDetokenizer};
use super::kv_cache::KvCache;
use super::sampling::{Sampler, SamplingParams};
use crate::chat::{Message, Role};
use crate::error::{Error, Result};
use crate::models::loader::LoadedModel;
use crate::models::token_array;
use mlx_rs::transforms::{async_eval, eval};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Tokens per prefill step: bounds peak memory on long prompts (mlx-lm uses 2048 too).
/// `HEARTH_PREFILL_CHUNK` overrides it, for tuning.
pub fn prefill_chunk() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("HEARTH_PREFILL_CHUNK").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2048)
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks that need exact lengths).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams { sampling: SamplingParams::default(), max_tokens: 1024, stop: vec![], ignore_eos: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    MaxTokens,
    StopString,
    Cancelled,
    ContextFull,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V were already cached from an earlier turn.
    pub reused_tokens: usize,
    /// Prompt tokens actually run through the model.
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub ttft_s: f64,
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub total_s: f64,
    pub peak_memory_bytes: u64,
    pub active_memory_bytes: u64,
    pub finish_reason: Option<FinishReason>,
    /// Oldest messages dropped to fit the context.
    pub trimmed_messages: usize,
}

pub struct Session {
    pub loaded: LoadedModel,
    cache: Vec<KvCache>,
    cache_tokens: Vec<u32>,
    pub context_length: usize,
    /// Token ids produced by the last `generate` call.
    pub last_tokens: Vec<u32>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Session {
    pub fn new(loaded: LoadedModel, context_length: Option<usize>) -> Self {
        let model_ctx = loaded.info.context_length.max(1);
        let context_length = context_length.unwrap_or(8192).clamp(16, model_ctx);
        let cache = loaded.model.new_cache();
        Session { loaded, cache, cache_tokens: Vec::new(), context_length, last_tokens: Vec::new() }
    }

    pub fn set_context_length(&mut self, n: usize) {
        self.context_length = n.clamp(16, self.loaded.info.context_length.max(16));
    }

    /// Forgets the prompt cache (e.g. when switching conversations).
    pub fn reset_cache(&mut self) {
        self.cache = self.loaded.model.new_cache();
        self.cache_tokens.clear();
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache_tokens.len()
    }

    fn render(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let tok = &self.loaded.tokenizer;
        let render = |msgs: &[Message]| {
            self.loaded.template.render(msgs, true, tok.bos_token.as_deref(), tok.eos_token.as_deref())
        };
        let text = match render(messages) {
            Ok(t) => t,
            // Templates that reject a system role (Gemma) get it folded into the first user turn.
            Err(e) if messages.first().is_some_and(|m| m.role == Role::System) && messages.len() > 1 => {
                let mut folded = messages[1..].to_vec();
                folded[0].content = format!("{}\n\n{}", messages[0].content, folded[0].content);
                render(&folded).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        };
        tok.encode_prompt(&text)
    }

    /// Renders a conversation to prompt tokens, dropping the oldest turns (never
    /// the system prompt or the newest message) if it does not fit the context
    /// with `reserve` tokens left for the answer. Returns tokens and turns dropped.
    pub fn prompt_for_messages(&self, messages: &[Message], reserve: usize) -> Result<(Vec<u32>, usize)> {
        match messages.last() {
            None => return Err(Error::EmptyPrompt),
            Some(m) if m.content.trim().is_empty() => return Err(Error::EmptyPrompt),
            _ => {}
        }
        let reserve = reserve.min(self.context_length / 2);
        let budget = self.context_length.saturating_sub(reserve);
        let has_system = messages[0].role == Role::System;
        let mut msgs = messages.to_vec();
        let mut dropped = 0;
        loop {
            let ids = self.render(&msgs)?;
            if ids.len() <= budget {
                return Ok((ids, dropped));
            }
            let first = if has_system { 1 } else { 0 };
            if msgs.len() - first <= 1 {
                return Err(Error::PromptTooLong { tokens: ids.len(), context: budget });
            }
            msgs.remove(first);
            dropped += 1;
            // Keep turns alternating user-first: drop the answer with its question.
            if msgs.len() - first > 1 && msgs[first].role == Role::Assistant {
                msgs.remove(first);
                dropped += 1;
            }
        }
    }

    /// Generates from prompt tokens, calling `on_text` with each piece of text.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationStats> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if prompt.len() >= self.context_length {
            return Err(Error::PromptTooLong { tokens: prompt.len(), context: self.context_length });
        }
        if params.max_tokens == 0 {
            return Err(Error::InvalidArgument("max tokens must be at least 1".into()));
        }
        let mut sampler = Sampler::new(params.sampling.clone(), prompt)?;
        let t0 = Instant::now();

        // Reuse the cached prefix; at least one token must run to get logits.
        let reuse = common_prefix(&self.cache_tokens, prompt).min(prompt.len() - 1);
        // A sliding-window cache may have dropped part of the prefix: start over.
        let reuse = if self.cache.iter().all(|c| c.can_truncate(reuse as i32)) { reuse } else { 0 };
        for c in &mut self.cache {
            c.truncate(reuse as i32);
        }
        self.cache_tokens.truncate(reuse);

        let rest = &prompt[reuse..];
        let chunk_len = prefill_chunk();
        let n_chunks = rest.len().div_ceil(chunk_len);
        let mut logits = None;
        for (i, chunk) in rest.chunks(chunk_len).enumerate() {
            let out = self.loaded.model.forward(&token_array(chunk), &mut self.cache, false);
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    self.reset_cache();
                    return Err(e);
                }
            };
            self.cache_tokens.extend_from_slice(chunk);
            if i + 1 < n_chunks {
                eval(self.cache.iter().flat_map(|c| c.arrays()))?;
            } else {
                logits = Some(out);
            }
        }
        let logits = logits.expect("rest is non-empty");
        let mut y = sampler.sample(&logits)?;
        async_eval([&y])?;

        let tok = &self.loaded.tokenizer;
        let mut detok = StreamingDetokenizer::new();
        let mut stops = StopMatcher::new(params.stop.clone());
        let mut stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reuse,
            prefilled_tokens: rest.len(),
            ..Default::default()
        };
        let mut t_first = None;
        self.last_tokens.clear();
        let reason;
        loop {
            let room = self.cache_tokens.len() + 1 < self.context_length;
            let more = stats.generated_tokens + 1 < params.max_tokens && room;
            // Queue the next step before reading this token: the device works
            // on step n+1 while the host handles token n.
            let next = if more {
                let l = self.loaded.model.forward(&y.reshape(&[1, 1])?, &mut self.cache, false)?;
                let nx = sampler.sample(&l)?;
                async_eval([&nx])?;
                Some(nx)
            } else {
                None
            };
            let id = y.try_item_exact::<i32>().map_err(|e| Error::Mlx(e.to_string()))? as u32;
            if t_first.is_none() {
                t_first = Some(Instant::now());
                stats.ttft_s = t0.elapsed().as_secs_f64();
            }
            stats.generated_tokens += 1;
            self.last_tokens.push(id);
            if next.is_some() {
                self.cache_tokens.push(id);
            }
            if cancel.load(Ordering::Relaxed) {
                reason = FinishReason::Cancelled;
                break;
            }
            if !params.ignore_eos && tok.eos_ids.contains(&id) {
                reason = FinishReason::Eos;
                break;
            }
            let piece = detok.push(tok, id);
            if !piece.is_empty() {
                match stops.push(&piece) {
                    StopCheck::Emit(s) => {
                        if !s.is_empty() {
                            on_text(&s)
                        }
                    }
                    StopCheck::Stop(s) => {
                        if !s.is_empty() {
                            on_text(&s)
                        }
                        reason = FinishReason::StopString;
                        break;
                    }
                }
            }
            match next {
                Some(nx) => y = nx,
                None => {
                    reason = if room { FinishReason::MaxTokens } else { FinishReason::ContextFull };
                    break;
                }
            }
        }
        if !matches!(reason, FinishReason::StopString | FinishReason::Cancelled) {
            let tail = detok.finish();
            let (StopCheck::Emit(s) | StopCheck::Stop(s)) = stops.push(&tail);
            let s = s + &stops.finish();
            if !s.is_empty() {
                on_text(&s);
            }
        }
        // Finish queued work so the cache is concrete for the next turn.
        eval(self.cache.iter().flat_map(|c| c.arrays()))?;
        let end = Instant::now();
        stats.total_s = (end - t0).as_secs_f64();
        stats.prefill_tps = stats.prefilled_tokens as f64 / stats.ttft_s.max(1e-9);
        if let Some(tf) = t_first {
            let d = (end - tf).as_secs_f64();
            if stats.generated_tokens > 1 && d > 0.0 {
                stats.decode_tps = (stats.generated_tokens - 1) as f64 / d;
            }
        }
        stats.peak_memory_bytes = mlx_rs::memory::peak_memory().unwrap_or(0) as u64;
        stats.active_memory_bytes = mlx_rs::memory::active_memory().unwrap_or(0) as u64;
        stats.finish_reason = Some(reason);
        Ok(stats)
    }
}
