//! A loaded model and its prefix cache, kept across requests: renders
//! conversations with the context policy, hands each sequence the cache that
//! shares most of its prompt, and runs a single generation as a batch of one.

use super::batch::{Batch, Out, Sequence};
use super::constraint::GrammarVocab;
use super::step::{self, PromptCache};
use crate::chat::params::{GenerateParams, GenerationStats, TokenLogprob};
use crate::chat::template::content_spans;
use crate::chat::{Message, Role};
use crate::error::{Error, Result};
use crate::models::load::LoadedModel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The smallest context a session runs with (a chat template alone takes more).
pub const MIN_CONTEXT: usize = 16;

/// How many finished sequences' caches the prefix cache keeps (a chat's
/// follow-up, or an agent's next request, resumes from the longest shared
/// prefix among them).
pub const PREFIX_CACHES: usize = 4;

pub struct Session {
    pub loaded: LoadedModel,
    /// The prefix cache: finished sequences' caches, oldest first.
    caches: Vec<PromptCache>,
    pub context_length: usize,
    /// Token ids produced by the last `generate` call.
    pub last_tokens: Vec<u32>,
    /// The vocabulary for structured output, built on first use.
    grammar: Option<GrammarVocab>,
    /// The engine's settings (prefill chunk, graph dump): the environment's
    /// unless the engine that owns the session hands it its own.
    pub config: super::EngineConfig,
    /// The draft model for speculative decoding, if the user set one (`draft`).
    pub draft: Option<super::draft::Draft>,
}

impl Session {
    pub fn new(loaded: LoadedModel, context_length: Option<usize>) -> Self {
        let model_ctx = loaded.info.context_length.max(1);
        let context_length = context_length.unwrap_or(8192).clamp(MIN_CONTEXT, model_ctx.max(MIN_CONTEXT));
        Session { loaded, caches: Vec::new(), context_length, last_tokens: Vec::new(), grammar: None, config: super::EngineConfig::from_env(), draft: None }
    }

    /// Sets (or, with None, drops) the draft model; refused, keeping none,
    /// for one whose tokenizer is not this model's (`Draft::new`).
    pub fn set_draft(&mut self, loaded: Option<LoadedModel>) -> Result<()> {
        self.draft = None;
        if let Some(l) = loaded {
            self.draft = Some(super::draft::Draft::new(l, &self.loaded.tokenizer)?);
        }
        Ok(())
    }

    pub fn set_context_length(&mut self, n: usize) {
        self.context_length = n.clamp(MIN_CONTEXT, self.loaded.info.context_length.max(MIN_CONTEXT));
    }

    /// Forgets the prefix cache (e.g. when switching conversations).
    pub fn reset_cache(&mut self) {
        self.caches.clear();
        if let Some(d) = self.draft.as_mut() {
            d.reset();
        }
    }

    fn render(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let tok = &self.loaded.tokenizer;
        let (text, rendered) =
            self.loaded.template.render_conversation(messages, tok.bos_token.as_deref(), tok.eos_token.as_deref())?;
        // Message content is text, never markup: control-token strings typed
        // into a message stay text (the template's own markup keeps its tokens).
        tok.encode_prompt_guarded(&text, &content_spans(&text, &rendered))
    }

    /// How many tokens `prompt` renders to, whole: the count a generation
    /// of it starts from before any turn is dropped to fit the context.
    pub fn count_prompt(&mut self, prompt: &super::Prompt) -> Result<usize> {
        use super::Prompt;
        match prompt {
            Prompt::Chat(msgs) => Ok(self.render(msgs)?.len()),
            Prompt::ChatWith(msgs, options) => {
                let saved = self.loaded.template.options.clone();
                self.loaded.template.options = saved.with(options);
                let rendered = self.render(msgs);
                self.loaded.template.options = saved;
                Ok(rendered?.len())
            }
            Prompt::Raw(text) => Ok(self.loaded.tokenizer.encode_prompt(text)?.len()),
        }
    }

    /// How `prompt` fits the context (`Command::Measure`): its whole length
    /// (`count_prompt`) and, for a conversation longer than the context with
    /// `reserve` tokens kept for the answer, how many of the oldest messages
    /// a generation of it would leave out (`prompt_for_messages`), or that
    /// none would make it fit.
    pub fn measure(&mut self, prompt: &super::Prompt, reserve: usize) -> Result<super::PromptFit> {
        use super::Prompt;
        let tokens = self.count_prompt(prompt)?;
        let budget = self.context_length.saturating_sub(reserve.min(self.context_length / 2));
        let mut fit = super::PromptFit { tokens, context_length: self.context_length, budget, dropped_messages: 0, fits: tokens <= budget };
        if fit.fits {
            return Ok(fit);
        }
        let fitted = match prompt {
            Prompt::Chat(msgs) => self.prompt_for_messages(msgs, reserve),
            Prompt::ChatWith(msgs, options) => {
                let saved = self.loaded.template.options.clone();
                self.loaded.template.options = saved.with(options);
                let r = self.prompt_for_messages(msgs, reserve);
                self.loaded.template.options = saved;
                r
            }
            Prompt::Raw(_) => return Ok(fit),
        };
        match fitted {
            Ok((_, dropped)) => (fit.dropped_messages, fit.fits) = (dropped, true),
            Err(Error::PromptTooLong { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(fit)
    }

    /// Renders a conversation to prompt tokens, dropping the oldest turns (never
    /// the system prompt or the newest message) if it does not fit the context
    /// with `reserve` tokens left for the answer. Returns tokens and turns dropped.
    pub fn prompt_for_messages(&self, messages: &[Message], reserve: usize) -> Result<(Vec<u32>, usize)> {
        self.prompt_for_messages_with(messages, reserve, true)
    }

    /// `prompt_for_messages`; with `may_drop` false a conversation that does
    /// not fit is an error instead (the Responses API's `truncation: disabled`).
    pub fn prompt_for_messages_with(&self, messages: &[Message], reserve: usize, may_drop: bool) -> Result<(Vec<u32>, usize)> {
        match messages.last() {
            None => return Err(Error::EmptyPrompt),
            Some(m) if m.content.trim().is_empty() => return Err(Error::EmptyPrompt),
            _ => {}
        }
        // Room for the answer where turns may go; where none may, only the
        // input itself must fit (OpenAI's `truncation: disabled`: the reply
        // then ends where the context does).
        let reserve = if may_drop { reserve.min(self.context_length / 2) } else { 1 };
        let budget = self.context_length.saturating_sub(reserve);
        let first = usize::from(messages[0].role == Role::System);
        // Where the kept messages start after each step of the policy: a step
        // leaves out the oldest message (never the system prompt or the
        // newest), and an answer with its question, so turns stay user-first.
        let mut starts = vec![first];
        let mut i = first;
        while may_drop && messages.len() - i > 1 {
            i += 1;
            if messages.len() - i > 1 && messages[i].role == Role::Assistant {
                i += 1;
            }
            starts.push(i);
        }
        let render_from = |start: usize| -> Result<Vec<u32>> {
            let mut kept = messages[..first].to_vec();
            kept.extend_from_slice(&messages[start..]);
            self.render(&kept)
        };
        let whole = render_from(first)?;
        if whole.len() <= budget {
            return Ok((whole, 0));
        }
        let last = starts.len() - 1;
        if last == 0 {
            return Err(Error::PromptTooLong { tokens: whole.len(), context: budget });
        }
        let mut fewest = render_from(starts[last])?;
        if fewest.len() > budget {
            return Err(Error::PromptTooLong { tokens: fewest.len(), context: budget });
        }
        // The fewest steps that fit, by bisection (fewer messages never take
        // more tokens): a long chat is rendered a dozen times, not once per
        // turn it drops.
        let (mut lo, mut hi) = (1, last);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let ids = render_from(starts[mid])?;
            if ids.len() <= budget {
                (hi, fewest) = (mid, ids);
            } else {
                lo = mid + 1;
            }
        }
        Ok((fewest, starts[hi] - first))
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
    /// read since the last piece (when `params.logprobs` asks for them). A
    /// batch of one sequence (`batch`), stepped until it ends.
    pub fn generate_scored(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str, Vec<TokenLogprob>),
    ) -> Result<GenerationStats> {
        // The caller's flag is borrowed; the sequence watches its own, set from it.
        let flag = Arc::new(AtomicBool::new(cancel.load(Ordering::Relaxed)));
        let mut batch = Batch::default();
        batch.push(Sequence::new(self, 0, prompt.to_vec(), params.clone(), flag.clone())?);
        loop {
            if cancel.load(Ordering::Relaxed) {
                flag.store(true, Ordering::Relaxed);
            }
            for o in batch.step(self) {
                match o {
                    Out::Text { text, logprobs, .. } => on_text(&text, logprobs),
                    Out::Done { stats, tokens, .. } => {
                        self.last_tokens = tokens;
                        return Ok(stats);
                    }
                    Out::Failed { error, .. } => return Err(error),
                }
            }
            if batch.is_empty() {
                return Err(Error::Mlx("the generation ended without a result".into()));
            }
        }
    }

    /// The prompt cache that shares the longest prefix with `prompt`, taken
    /// out of the prefix cache (a fresh one if none shares any): each
    /// sequence in a batch owns its cache while it runs.
    pub(super) fn take_cache(&mut self, prompt: &[u32]) -> PromptCache {
        let best = self
            .caches
            .iter()
            .enumerate()
            .map(|(i, c)| (i, step::common_prefix(&c.tokens, prompt)))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n);
        match best {
            Some((i, _)) => self.caches.remove(i),
            None => PromptCache::with_kv_quant(self.loaded.model.as_ref(), self.config.kv_quant()),
        }
    }

    /// Hands a finished sequence's cache back to the prefix cache, which
    /// keeps the `PREFIX_CACHES` most recently used within
    /// `config.prefix_cache_bytes` (the newest stays even alone past it:
    /// its memory was in use a moment ago, and a follow-up is its likeliest
    /// next request).
    pub(super) fn return_cache(&mut self, cache: PromptCache) {
        self.caches.push(cache);
        let mut bytes: u64 = self.caches.iter().map(PromptCache::nbytes).sum();
        while self.caches.len() > 1 && (self.caches.len() > PREFIX_CACHES || bytes > self.config.prefix_cache_bytes) {
            bytes -= self.caches.remove(0).nbytes();
        }
    }

    /// What identifies this model's weights for the prompt cache on disk.
    pub fn prompt_stamp(&self) -> String {
        super::prompt_file::model_stamp(&self.loaded.info.path, &self.loaded.info.compute)
    }

    /// Restores the prompt cache saved in `dir` into the prefix cache where it
    /// holds more of `prompt` than any cache in memory; returns the prompt
    /// tokens it holds (0 where it was not used). A refused one (corrupt,
    /// truncated, from other weights) is removed and its reason returned:
    /// the prompt is then computed as if nothing had been saved.
    pub fn restore_prompt_file(&mut self, dir: &std::path::Path, prompt: &[u32]) -> Result<usize> {
        use super::prompt_file;
        let stamp = self.prompt_stamp();
        let refused = |e: Error| {
            prompt_file::remove(dir);
            Err(e)
        };
        let saved = match prompt_file::saved_tokens(dir, &stamp) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(0),
            Err(e) => return refused(e),
        };
        let from_file = step::common_prefix(&saved, prompt);
        let in_memory = self.caches.iter().map(|c| step::common_prefix(&c.tokens, prompt)).max().unwrap_or(0);
        if from_file <= in_memory {
            return Ok(0);
        }
        match prompt_file::load(dir, self.loaded.model.as_ref(), &stamp, self.config.kv_quant()) {
            Ok(Some(c)) => {
                self.return_cache(c);
                Ok(from_file)
            }
            Ok(None) => Ok(0),
            Err(e) => refused(e),
        }
    }

    /// How many finished sequences' caches the prefix cache holds, and their bytes.
    pub fn prefix_cache(&self) -> (usize, u64) {
        (self.caches.len(), self.caches.iter().map(PromptCache::nbytes).sum())
    }

    /// A structured-output constraint for one sequence (the grammar's
    /// vocabulary is built on first use and shared).
    pub(super) fn start_constraint(&mut self, c: &crate::chat::params::OutputConstraint) -> Result<super::constraint::Constraint> {
        let tok = &self.loaded.tokenizer;
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
        self.grammar.as_ref().expect("built above").start(c, markup, &marker)
    }
}

