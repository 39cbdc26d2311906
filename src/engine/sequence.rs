//! One request as the batch serves it (`batch`): its prompt cache, sampler,
//! structured-output constraint, detokenizer and stop strings, statistics
//! and cancel flag, each its own, so sequences join and leave a batch
//! without touching each other.

use super::constraint::Constraint;
use super::protocol::RequestId;
use super::sampling::{Sampler, Scores};
use super::session::Session;
use super::step::{self, PromptCache};
use super::stream::{ReplyStream, StopCheck};
use crate::chat::params::{FinishReason, GenerateParams, GenerationStats, Scored, TokenLogprob};
use crate::chat::reply::{Part, ReplyReader};
use crate::chat::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use mlx_rs::transforms::async_eval;
use mlx_rs::Array;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a step tells the caller about one sequence.
#[derive(Debug)]
pub enum Out {
    /// A piece of the reply: its text as the model wrote it, the same read
    /// into typed parts (reasoning, content, tool calls; parts may lag the
    /// text while markup is cut across tokens), and its tokens'
    /// log-probabilities if asked for.
    Text { id: RequestId, text: String, parts: Vec<Part>, logprobs: Vec<TokenLogprob> },
    /// The sequence ended; it has left the batch.
    Done { id: RequestId, stats: GenerationStats, tokens: Vec<u32> },
    /// The sequence failed; it has left the batch, the others go on.
    Failed { id: RequestId, error: Error },
}

pub(super) enum Phase {
    /// Prompt pieces still to run (`step::plan_prefill`).
    Prefill(VecDeque<Range<usize>>),
    /// The token sampled last, on the device: read at the next step (after
    /// the step past it is queued) unless `read` (constrained rows).
    Decode { token: Array, scores: Option<Scores>, read: bool },
}

pub struct Sequence {
    pub id: RequestId,
    pub(super) prompt: Vec<u32>,
    pub(super) params: GenerateParams,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) cache: PromptCache,
    pub(super) sampler: Sampler,
    pub(super) constraint: Option<Constraint>,
    text: ReplyStream,
    /// Reads the text into parts (`read_replies`; all content by default).
    reader: ReplyReader,
    pub(super) stats: GenerationStats,
    pub(super) phase: Phase,
    /// Tokens sampled so far (read or still on the device).
    pub(super) taken: usize,
    /// The ids read, in order (`Out::Done`).
    generated: Vec<u32>,
    /// Log-probabilities of tokens whose text is not out yet.
    scored: Vec<TokenLogprob>,
    pub(super) reason: Option<FinishReason>,
    started: Instant,
    first_token: Option<Instant>,
    /// Why the prompt was rendered shorter (messages dropped).
    pub trimmed_messages: usize,
    /// Speculative decoding (`speculate`), where this sequence may: a
    /// sampler without penalties (whose draws do not depend on the tokens
    /// before them in the same pass), no constraint, no log-probabilities,
    /// and caches that can be cut back (no recurrent state).
    pub(super) speculation: Option<super::speculate::Speculation>,
    /// Tokens fed whatever the model would say (closing a reasoning block
    /// past its budget), and whether the budget closed it already.
    forced: VecDeque<u32>,
    budget_spent: bool,
}

impl Sequence {
    /// A sequence for `prompt`, with the cache from the session's prefix
    /// cache that shares most of it; refused (an error, and nothing else
    /// changes) for an empty or too long prompt, bad parameters or a bad
    /// schema.
    pub fn new(
        session: &mut Session,
        id: RequestId,
        prompt: Vec<u32>,
        params: GenerateParams,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if prompt.len() >= session.context_length {
            return Err(Error::PromptTooLong { tokens: prompt.len(), context: session.context_length });
        }
        if params.max_tokens == 0 {
            return Err(Error::InvalidArgument("max tokens must be at least 1".into()));
        }
        let sampler = Sampler::new(params.sampling.clone(), &prompt)?.with_logprobs(params.logprobs);
        let constraint = match &params.constraint {
            Some(c) => Some(session.start_constraint(c)?),
            None => None,
        };
        let started = Instant::now();
        let mut cache = session.take_cache(&prompt);
        let (reused, pieces) = step::plan_prefill(&*session.loaded.model, &mut cache, &prompt, session.config.prefill_chunk);
        let speculation = ((session.config.prompt_lookup > 0 || session.draft.is_some())
            && params.constraint.is_none()
            && params.logprobs.is_none()
            && !params.sampling.penalizes()
            && !cache.is_hybrid())
        .then(|| super::speculate::Speculation::new(session.config.prompt_lookup));
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prefilled_tokens: prompt.len() - reused,
            batch_rows: 1,
            ..Default::default()
        };
        Ok(Sequence {
            id,
            text: ReplyStream::new(session.loaded.template.harmony, params.stop.clone()),
            reader: ReplyReader::plain(),
            prompt,
            params,
            cancel,
            cache,
            sampler,
            constraint,
            stats,
            phase: Phase::Prefill(pieces.into()),
            taken: 0,
            generated: Vec::new(),
            scored: Vec::new(),
            reason: None,
            started,
            first_token: None,
            trimmed_messages: 0,
            speculation,
            forced: VecDeque::new(),
            budget_spent: false,
        })
    }

    /// Counts its times from `t` (work done for it before it was made).
    pub(super) fn started_at(&mut self, t: Instant) {
        self.started = self.started.min(t);
    }

    /// Whether the next tokens are forced (read one at a time, as a
    /// constrained row's, and never speculated past).
    pub(super) fn forcing(&self) -> bool {
        !self.forced.is_empty()
    }

    /// The next forced token taken into the reply (read at once: the next
    /// step feeds it), or None when nothing is forced. A block the model
    /// closed itself meanwhile drops the rest of the closing markup.
    pub(super) fn take_forced(&mut self, tok: &TextTokenizer, out: &mut Vec<Out>) -> Result<Option<bool>> {
        if !self.reader.thinking() {
            self.forced.clear();
        }
        let Some(id) = self.forced.pop_front() else { return Ok(None) };
        self.sampler.record(id)?;
        let go_on = self.accept(id, None, tok, out)?;
        self.phase = Phase::Decode { token: Array::from_slice(&[id as i32], &[1]), scores: None, read: true };
        Ok(Some(go_on))
    }

    /// Past the reasoning budget inside a `<think>` block: the markup that
    /// closes it goes next. (Harmony's channels are left to the model.)
    fn check_budget(&mut self, tok: &TextTokenizer) -> Result<()> {
        let Some(budget) = self.params.reasoning_budget else { return Ok(()) };
        // (Structured output's grammar decides every token itself.)
        if self.budget_spent || self.constraint.is_some() || !self.reader.thinking() || self.text.is_harmony() || self.stats.reasoning_tokens < budget {
            return Ok(());
        }
        self.budget_spent = true;
        // Control tokens read as such ("</think>" is one in many vocabularies), without the BOS a prompt starts with.
        let mut ids = tok.encode_prompt("\n</think>\n\n")?;
        if tok.bos_id.is_some() && ids.first() == tok.bos_id.as_ref() {
            ids.remove(0);
        }
        self.forced = ids.into();
        Ok(())
    }

    /// How the reply is read into parts (a chat reply: reasoning and tool calls).
    pub fn read_replies(&mut self, reader: ReplyReader) {
        self.reader = reader;
    }

    pub(super) fn decoding(&self) -> bool {
        matches!(self.phase, Phase::Decode { .. })
    }

    /// Whether another token may be sampled after the ones taken: the
    /// request's limit, and room in the context for the one fed back.
    fn room(&self, context_length: usize) -> bool {
        self.cache.tokens.len() + 1 < context_length
    }

    pub(super) fn more(&self, context_length: usize) -> bool {
        self.taken < self.params.max_tokens && self.room(context_length)
    }

    /// Samples this row's next token from its logits ([1, vocab]): queued on
    /// the device, or (constrained) masked, read and committed at once.
    pub(super) fn sample(&mut self, logits: &Array, tok: &TextTokenizer, out: &mut Vec<Out>) -> Result<bool> {
        self.taken += 1;
        if let Some(go_on) = self.take_forced(tok, out)? {
            return Ok(go_on);
        }
        match self.constraint.as_mut() {
            None => {
                let (token, scores) = self.sampler.sample_scored(logits)?;
                self.phase = Phase::Decode { token, scores, read: false };
                Ok(true)
            }
            Some(c) => {
                let mask = c.mask()?;
                let (token, scores) = self.sampler.sample_scored(&logits.add(&mask)?)?;
                let id = read_id(&token)?;
                c.commit(id)?;
                let go_on = self.accept(id, scores.as_ref(), tok, out)?;
                self.phase = Phase::Decode { token, scores, read: true };
                Ok(go_on)
            }
        }
    }

    /// Samples the first token from the prompt's last logits and queues it
    /// (with its scores) on the device, so the next step's pass follows it.
    pub(super) fn first_token_after_prefill(&mut self, logits: &Array, tok: &TextTokenizer, out: &mut Vec<Out>) -> Result<bool> {
        let go_on = self.sample(logits, tok, out)?;
        if let Phase::Decode { token, scores, read: false } = &self.phase {
            let mut arrays = vec![token];
            arrays.extend(scores.iter().flat_map(|sc| sc.arrays()));
            async_eval(arrays)?;
        }
        Ok(go_on)
    }

    /// Takes token `id` into the reply: scores, text, stops. Returns whether
    /// the sequence goes on.
    pub(super) fn accept(&mut self, id: u32, scores: Option<&Scores>, tok: &TextTokenizer, out: &mut Vec<Out>) -> Result<bool> {
        if let Some(sc) = scores {
            let (logprob, top) = sc.read()?;
            self.scored.push(TokenLogprob {
                token: describe(tok, id, logprob),
                top: top.into_iter().map(|(i, l)| describe(tok, i, l)).collect(),
            });
        }
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
            self.stats.ttft_s = self.started.elapsed().as_secs_f64();
        }
        self.stats.generated_tokens += 1;
        self.generated.push(id);
        if self.cancel.load(Ordering::Relaxed) {
            self.reason = Some(FinishReason::Cancelled);
            return Ok(false);
        }
        if !self.params.ignore_eos && tok.eos_ids.contains(&id) {
            // The end is not part of the reply's text, nor of its scores.
            if scores.is_some() {
                self.scored.pop();
            }
            self.reason = Some(FinishReason::Eos);
            return Ok(false);
        }
        let (piece, reason) = match self.text.push(tok, id) {
            StopCheck::Emit(s) => (s, None),
            StopCheck::Stop(s) => (s, Some(FinishReason::StopString)),
            StopCheck::End(s) => (s, Some(FinishReason::Eos)),
        };
        // A token counts as reasoning when read inside the block, the ones
        // that open and close it included.
        let thinking = self.reader.thinking();
        if !piece.is_empty() {
            let parts = self.reader.push(&piece);
            out.push(Out::Text { id: self.id, text: piece, parts, logprobs: std::mem::take(&mut self.scored) });
        }
        if thinking || self.reader.thinking() {
            self.stats.reasoning_tokens += 1;
        }
        self.check_budget(tok)?;
        self.reason = reason;
        Ok(reason.is_none())
    }

    /// Ends the sequence: the held-back text, the cache settled and handed
    /// back to the session, the statistics.
    pub(super) fn finish(mut self, session: &mut Session, out: &mut Vec<Out>) {
        let reason = self.reason.unwrap_or(if self.room(session.context_length) { FinishReason::MaxTokens } else { FinishReason::ContextFull });
        // After a stop string or a cancel, held-back text stays unsaid; a
        // harmony reply still gets its open reasoning block closed.
        let s = if !matches!(reason, FinishReason::StopString | FinishReason::Cancelled) || self.text.is_harmony() {
            self.text.finish()
        } else {
            String::new()
        };
        // The reader's held-back markup (a tag cut short, a call at the very end).
        let mut parts = self.reader.push(&s);
        parts.extend(self.reader.finish());
        if !s.is_empty() || !self.scored.is_empty() || !parts.is_empty() {
            out.push(Out::Text { id: self.id, text: s, parts, logprobs: std::mem::take(&mut self.scored) });
        }
        if let Err(error) = step::settle(&mut self.cache) {
            out.push(Out::Failed { id: self.id, error });
            return;
        }
        if let Some(c) = &self.constraint {
            self.stats.mask_ms_per_token = Some(c.mask_time.as_secs_f64() * 1e3 / c.steps.max(1) as f64);
        }
        let end = Instant::now();
        let st = &mut self.stats;
        st.total_s = (end - self.started).as_secs_f64();
        st.prefill_tps = st.prefilled_tokens as f64 / st.ttft_s.max(1e-9);
        if let Some(tf) = self.first_token {
            let d = (end - tf).as_secs_f64();
            if st.generated_tokens > 1 && d > 0.0 {
                st.decode_tps = (st.generated_tokens - 1) as f64 / d;
            }
        }
        st.peak_memory_bytes = mlx_rs::memory::peak_memory().unwrap_or(0) as u64;
        st.active_memory_bytes = mlx_rs::memory::active_memory().unwrap_or(0) as u64;
        st.finish_reason = Some(reason);
        st.trimmed_messages = self.trimmed_messages;
        if let Some(dir) = &self.params.prompt_file {
            match super::prompt_file::save(dir, &self.cache, &session.prompt_stamp()) {
                Ok(bytes) => {
                    st.prompt_file_written = bytes;
                    super::prompt_file::evict(dir, session.config.prompt_files_bytes);
                }
                Err(e) => st.prompt_file_error = Some(format!("the prompt cache was not saved: {e}")),
            }
        }
        session.return_cache(self.cache);
        out.push(Out::Done { id: self.id, stats: self.stats, tokens: self.generated });
    }
}

pub(super) fn read_id(token: &Array) -> Result<u32> {
    Ok(token.try_item_exact::<i32>().map_err(|e| Error::Mlx(e.to_string()))? as u32)
}

/// A token as log-probabilities report it: its text (a control token's
/// name) and bytes.
fn describe(tok: &TextTokenizer, id: u32, logprob: f32) -> Scored {
    let text = tok.special_text(id).unwrap_or_else(|| tok.decode(&[id]));
    Scored { id, text, bytes: tok.bytes_of(id).to_vec(), logprob }
}

