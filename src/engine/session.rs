//! A loaded model and its prompt cache, kept across requests: renders
//! conversations with the context policy, and runs one generation by joining
//! the token loop (`step`) with streaming text (`stream`) and timing it.

use super::constraint::GrammarVocab;
use super::sampling::Sampler;
use super::step::{self, LoopEnd, PromptCache};
use super::stream::{ReplyStream, StopCheck};
use super::sampling::Scores;
use crate::chat::params::{FinishReason, GenerateParams, GenerationStats, Scored, TokenLogprob};
use crate::chat::tokenizer::TextTokenizer;
use crate::chat::template::content_spans;
use crate::chat::{Message, Role};
use crate::error::{Error, Result};
use crate::models::load::LoadedModel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The smallest context a session runs with (a chat template alone takes more).
pub const MIN_CONTEXT: usize = 16;

pub struct Session {
    pub loaded: LoadedModel,
    cache: PromptCache,
    pub context_length: usize,
    /// Token ids produced by the last `generate` call.
    pub last_tokens: Vec<u32>,
    /// The vocabulary for structured output, built on first use.
    grammar: Option<GrammarVocab>,
}

impl Session {
    pub fn new(loaded: LoadedModel, context_length: Option<usize>) -> Self {
        let model_ctx = loaded.info.context_length.max(1);
        let context_length = context_length.unwrap_or(8192).clamp(MIN_CONTEXT, model_ctx.max(MIN_CONTEXT));
        let cache = PromptCache::new(loaded.model.as_ref());
        Session { loaded, cache, context_length, last_tokens: Vec::new(), grammar: None }
    }

    pub fn set_context_length(&mut self, n: usize) {
        self.context_length = n.clamp(MIN_CONTEXT, self.loaded.info.context_length.max(MIN_CONTEXT));
    }

    /// Forgets the prompt cache (e.g. when switching conversations).
    pub fn reset_cache(&mut self) {
        self.cache = PromptCache::new(self.loaded.model.as_ref());
    }

    fn render(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let tok = &self.loaded.tokenizer;
        let (text, rendered) =
            self.loaded.template.render_conversation(messages, tok.bos_token.as_deref(), tok.eos_token.as_deref())?;
        // Message content is text, never markup: control-token strings typed
        // into a message stay text (the template's own markup keeps its tokens).
        tok.encode_prompt_guarded(&text, &content_spans(&text, &rendered))
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
        self.generate_scored(prompt, params, cancel, &mut |text, _| on_text(text))
    }

    /// `generate`, with each piece of text the log-probabilities of the tokens
    /// read since the last piece (when `params.logprobs` asks for them).
    pub fn generate_scored(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str, Vec<TokenLogprob>),
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
        let mut sampler = Sampler::new(params.sampling.clone(), prompt)?.with_logprobs(params.logprobs);
        let t0 = Instant::now();
        let model = &*self.loaded.model;
        let (logits, reused) = step::prefill(model, &mut self.cache, prompt)?;
        let mut stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prefilled_tokens: prompt.len() - reused,
            ..Default::default()
        };
        let tok = &self.loaded.tokenizer;
        let mut text = ReplyStream::new(self.loaded.template.harmony, params.stop.clone());
        let mut t_first = None;
        let mut reason = None;
        let last_tokens = &mut self.last_tokens;
        last_tokens.clear();
        let mut constraint = match &params.constraint {
            Some(c) => {
                if self.grammar.is_none() {
                    let eos = tok.eos_ids.first().copied().ok_or_else(|| Error::InvalidArgument("structured output needs an end-of-sequence token".into()))?;
                    let width = self.loaded.model.info().vocab_size;
                    self.grammar = Some(GrammarVocab::new(tok, eos, width)?);
                }
                let markup = self.loaded.template.call_markup;
                let marker = |text: &str| match tok.special_id(text) {
                    Some(id) => format!("<[{id}]>"),
                    None => serde_json::Value::from(text).to_string(),
                };
                Some(self.grammar.as_ref().expect("built above").start(c, markup, &marker)?)
            }
            None => None,
        };
        // Scores of tokens whose text is not out yet.
        let mut scored: Vec<TokenLogprob> = Vec::new();
        let mut scored_error = None;
        let mut on_token = |id: u32, scores: Option<&Scores>| {
            if let Some(sc) = scores {
                match sc.read() {
                    Ok((logprob, top)) => scored.push(TokenLogprob {
                        token: describe(tok, id, logprob),
                        top: top.into_iter().map(|(i, l)| describe(tok, i, l)).collect(),
                    }),
                    Err(e) => {
                        scored_error = Some(e);
                        return false;
                    }
                }
            }
            let mut on_text = |s: &str| on_text(s, std::mem::take(&mut scored));
            if t_first.is_none() {
                t_first = Some(Instant::now());
                stats.ttft_s = t0.elapsed().as_secs_f64();
            }
            stats.generated_tokens += 1;
            last_tokens.push(id);
            if cancel.load(Ordering::Relaxed) {
                reason = Some(FinishReason::Cancelled);
                return false;
            }
            if !params.ignore_eos && tok.eos_ids.contains(&id) {
                // The end is not part of the reply's text, nor of its scores.
                if scores.is_some() {
                    scored.pop();
                }
                reason = Some(FinishReason::Eos);
                return false;
            }
            match text.push(tok, id) {
                StopCheck::Emit(s) => {
                    if !s.is_empty() {
                        on_text(&s);
                    }
                    true
                }
                StopCheck::Stop(s) => {
                    if !s.is_empty() {
                        on_text(&s);
                    }
                    reason = Some(FinishReason::StopString);
                    false
                }
                StopCheck::End(s) => {
                    if !s.is_empty() {
                        on_text(&s);
                    }
                    reason = Some(FinishReason::Eos);
                    false
                }
            }
        };
        let end = match constraint.as_mut() {
            Some(c) => step::decode_constrained(
                model,
                &mut self.cache,
                self.context_length,
                &logits,
                &mut sampler,
                c,
                params.max_tokens,
                &mut on_token,
            )?,
            None => step::decode(model, &mut self.cache, self.context_length, &logits, &mut sampler, params.max_tokens, &mut on_token)?,
        };
        if let Some(e) = scored_error {
            return Err(e);
        }
        if let Some(c) = &constraint {
            stats.mask_ms_per_token = Some(c.mask_time.as_secs_f64() * 1e3 / c.steps.max(1) as f64);
        }
        let reason = reason.unwrap_or(match end {
            LoopEnd::ContextFull => FinishReason::ContextFull,
            LoopEnd::MaxTokens | LoopEnd::Stopped => FinishReason::MaxTokens,
        });
        // After a stop string or a cancel, held-back text stays unsaid; a
        // harmony reply still gets its open reasoning block closed.
        if !matches!(reason, FinishReason::StopString | FinishReason::Cancelled) || text.is_harmony() {
            let s = text.finish();
            if !s.is_empty() || !scored.is_empty() {
                on_text(&s, std::mem::take(&mut scored));
            }
        }
        step::settle(&mut self.cache)?;
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

/// A token as log-probabilities report it: its text (a control token's
/// name) and bytes.
fn describe(tok: &TextTokenizer, id: u32, logprob: f32) -> Scored {
    let text = tok.special_text(id).unwrap_or_else(|| tok.decode(&[id]));
    Scored { id, text, bytes: tok.bytes_of(id).to_vec(), logprob }
}
