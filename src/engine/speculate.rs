//! Speculative decoding: guesses at the next few tokens, checked by the
//! model in one forward pass over them all; each guess kept is a decode step
//! saved. The guesses come from a draft model where one is set (`draft`: a
//! small model with the same tokenizer), else from prompt lookup (llama.cpp's
//! n-gram lookup, vLLM's `prompt_lookup`): where the last few tokens of a
//! sequence occurred before (in the prompt, or earlier in the reply), the
//! tokens that followed them there. Editing, code and summaries that quote
//! their input repeat long runs.
//!
//! The check is exact for any sampler without penalties: at each position
//! the target's own sampler draws a token, and a proposal is kept while it
//! equals the draw. For a proposal that is a single token (all a lookup or
//! a greedy draft offers), this is the standard rejection scheme: the draw equals it with
//! the target's probability, and a draw that differs is a sample of the
//! target's distribution without it — the residual. Greedy output is the
//! plain greedy output. The cache is cut back past the rejected proposals.
//!
//! Proposals that keep failing cost a wider pass for nothing, so a sequence
//! whose proposals are rejected three times running stops looking for a
//! while, longer each time (the speculation turns itself off where it does
//! not pay, and on again where the text starts repeating).

use super::batch::Batch;
use super::sequence::{read_id, Out, Phase, Sequence};
use super::session::Session;
use crate::error::{Error, Result};
use crate::models::cache::{Cache, LayerCache};
use crate::models::nn::layers::token_array;
use crate::models::{ForwardCtx, Head, Input};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;

/// The longest and shortest run of recent tokens looked up (llama.cpp and
/// vLLM use 2 to 4 by default; one token matches almost anywhere).
const NGRAM_MAX: usize = 4;
const NGRAM_MIN: usize = 2;
/// Rejected passes in a row before looking pauses, and the pause's bounds
/// (decode steps; doubled each time it pauses again without an accepted
/// proposal in between).
const STRIKES: u32 = 3;
const PAUSE_MIN: u32 = 8;
const PAUSE_MAX: u32 = 256;

/// A draft model's guess starts at this many tokens and moves between 1
/// and `DRAFT_MAX` with what is kept (longer while whole guesses are kept,
/// shorter while most of one is rejected).
const DRAFT_START: usize = 4;
const DRAFT_MAX: usize = 8;

/// One sequence's speculation: how far it proposes and how it has fared.
#[derive(Debug, Clone)]
pub struct Speculation {
    /// The most tokens a lookup proposes in one pass (the engine's setting).
    max_draft: usize,
    /// The draft model's guess length now.
    draft_len: usize,
    /// Rejected passes in a row, and the steps left to pause.
    strikes: u32,
    pause_left: u32,
    pause: u32,
}

/// The tokens that followed the most recent earlier occurrence of the
/// longest suffix of `history` (NGRAM_MAX tokens down to NGRAM_MIN) that
/// occurred before, at most `max` of them; empty where none did.
pub fn propose(history: &[u32], max: usize) -> Vec<u32> {
    let len = history.len();
    if max == 0 {
        return Vec::new();
    }
    for n in (NGRAM_MIN..=NGRAM_MAX.min(len.saturating_sub(1))).rev() {
        let suffix = &history[len - n..];
        // The most recent start before the suffix itself.
        if let Some(start) = (0..len - n).rev().find(|&s| &history[s..s + n] == suffix) {
            let from = start + n;
            return history[from..(from + max).min(len)].to_vec();
        }
    }
    Vec::new()
}

impl Speculation {
    pub fn new(max_draft: usize) -> Self {
        Speculation { max_draft, draft_len: DRAFT_START, strikes: 0, pause_left: 0, pause: PAUSE_MIN }
    }

    /// Whether to look this step (a paused lookup counts the step off).
    fn ready(&mut self) -> bool {
        if self.pause_left > 0 {
            self.pause_left -= 1;
            return false;
        }
        true
    }

    /// Proposals after `history`, at most `room`.
    fn propose(&self, history: &[u32], room: usize) -> Vec<u32> {
        propose(history, self.max_draft.min(room))
    }

    /// Takes a checked pass's outcome: `accepted` of `proposed` kept.
    fn record(&mut self, accepted: usize, proposed: usize) {
        if accepted == proposed {
            self.draft_len = (self.draft_len + 1).min(DRAFT_MAX);
        } else if accepted * 2 < proposed {
            self.draft_len = self.draft_len.saturating_sub(1).max(1);
        }
        if accepted > 0 {
            self.strikes = 0;
            self.pause = PAUSE_MIN;
            return;
        }
        self.strikes += 1;
        if self.strikes >= STRIKES {
            self.strikes = 0;
            self.pause_left = self.pause;
            self.pause = (self.pause * 2).min(PAUSE_MAX);
        }
    }
}

impl Batch {
    /// The step of a lone decoding sequence whose tokens suggest proposals:
    /// one checked pass over them. Returns whether it ran (if not, the plain
    /// step runs). A failed pass fails the sequence alone.
    pub(super) fn speculate(&mut self, session: &mut Session, out: &mut Vec<Out>) -> Result<bool> {
        let Some(i) = self.seqs.iter().position(Sequence::decoding) else { return Ok(false) };
        let (ctx, chunk) = (session.context_length, session.config.prefill_chunk);
        let Some((t, drafts)) = self.seqs[i].proposals(session.draft.as_mut(), ctx, chunk)? else { return Ok(false) };
        match self.seqs[i].verify(session, t, &drafts, out) {
            Ok(true) => {}
            Ok(false) => self.seqs.remove(i).finish(session, out),
            Err(error) => out.push(Out::Failed { id: self.seqs.remove(i).id, error }),
        }
        Ok(true)
    }
}

impl Sequence {
    /// For a sequence that speculates: its last sampled token (read now) and
    /// the proposals after it, from the draft model if one is set, else from
    /// lookup where the tokens so far suggest some. None leaves the step to
    /// the plain path, unsynchronized: without a draft the token is only read
    /// when the known tokens already end in a run seen before.
    pub(super) fn proposals(&mut self, draft: Option<&mut super::draft::Draft>, context_length: usize, chunk: usize) -> Result<Option<(u32, Vec<u32>)>> {
        if self.forcing() {
            return Ok(None);
        }
        let Some(spec) = self.speculation.as_mut() else { return Ok(None) };
        let Phase::Decode { token, scores: None, read: false } = &self.phase else { return Ok(None) };
        // Room for proposals: each kept one and the pass's own draw are
        // sampled tokens (the request's limit), the fed token and the
        // proposals go into the cache, the draw is fed next step.
        let room = self
            .params
            .max_tokens
            .saturating_sub(self.taken + 1)
            .min(context_length.saturating_sub(self.cache.tokens.len() + 3));
        if room == 0 || !spec.ready() {
            return Ok(None);
        }
        // Without a draft, only worth a wait for the token when the text is repeating.
        if draft.is_none() && propose(&self.cache.tokens, 1).is_empty() {
            return Ok(None);
        }
        let t = read_id(token)?;
        self.cache.tokens.push(t);
        let drafts = match draft {
            Some(d) => d.propose(&self.cache.tokens, spec.draft_len.min(room), chunk),
            None => Ok(spec.propose(&self.cache.tokens, room)),
        };
        self.cache.tokens.pop();
        let drafts = drafts?;
        Ok(if drafts.is_empty() { None } else { Some((t, drafts)) })
    }

    /// One pass over the last sampled token `t` and `drafts`: a draw at every
    /// position, the proposals kept while they equal the draws, the cache cut
    /// back past the rest, and the first draw that differs (or the one after
    /// the last proposal) queued as the next token. Returns whether the
    /// sequence goes on.
    pub(super) fn verify(&mut self, session: &Session, t: u32, drafts: &[u32], out: &mut Vec<Out>) -> Result<bool> {
        let model = &*session.loaded.model;
        let tok = &session.loaded.tokenizer;
        let k = drafts.len();
        let mut fed = Vec::with_capacity(k + 1);
        fed.push(t);
        fed.extend_from_slice(drafts);
        let mut caches: Vec<&mut [Cache]> = vec![&mut self.cache.layers[..]];
        let logits = model.forward(Input::tokens(&token_array(&fed)), &mut ForwardCtx::new(&mut caches, Head::Last(k as i32 + 1)))?.logits()?;
        let draws: Vec<Array> = (0..=k as i32).map(|j| self.sampler.sample(&logits.index((.., j, ..)))).collect::<Result<_>>()?;
        let draws = mlx_rs::ops::concatenate(&draws, 0)?;
        mlx_rs::transforms::eval([&draws])?;
        let draws: Vec<u32> = draws.as_slice::<i32>().iter().map(|&d| d as u32).collect();
        let kept = drafts.iter().zip(&draws).take_while(|(d, y)| d == y).count();
        self.stats.draft_tokens += k;
        self.stats.accepted_draft_tokens += kept;
        if let Some(l) = self.speculation.as_mut() {
            l.record(kept, k);
        }
        // The fed token, then the kept proposals, each taken as a plain step
        // would (stop strings and end tokens inside the run end it there).
        self.cache.tokens.push(t);
        let mut go_on = self.accept(t, None, tok, out)?;
        for &d in &drafts[..kept] {
            // A reasoning budget that ran out: its markup comes next, not the guesses.
            if !go_on || self.forcing() {
                break;
            }
            self.cache.tokens.push(d);
            self.taken += 1;
            go_on = self.accept(d, None, tok, out)?;
        }
        let held = self.cache.tokens.len() as i32;
        if !self.cache.layers.iter().all(|c| c.can_truncate(held)) {
            return Err(Error::Mlx("a speculative pass left a cache that cannot be cut back".into()));
        }
        for c in &mut self.cache.layers {
            c.truncate(held);
        }
        if go_on {
            self.taken += 1;
            if let Some(go_on) = self.take_forced(tok, out)? {
                return Ok(go_on);
            }
            let next = Array::from_slice(&[draws[kept] as i32], &[1]);
            self.phase = Phase::Decode { token: next, scores: None, read: false };
        }
        Ok(go_on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::params::{FinishReason, GenerateParams, SamplingParams};
    use crate::chat::Message;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex, OnceLock};

    /// The real SmolLM2 (scripts/setup.sh installs it), loaded once.
    fn session() -> std::sync::MutexGuard<'static, Session> {
        static S: OnceLock<Mutex<Session>> = OnceLock::new();
        S.get_or_init(|| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/models/SmolLM2-135M-Instruct.Q4_1.gguf");
            let loaded = crate::models::load::load(&path, crate::models::load::Precision::Auto).expect("SmolLM2 (run scripts/setup.sh)");
            Mutex::new(Session::new(loaded, Some(1024)))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
    }

    fn greedy(max_tokens: usize, stop: &[&str]) -> GenerateParams {
        GenerateParams { sampling: SamplingParams::greedy(), max_tokens, stop: stop.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    /// The reply's text and tokens, generated plainly (no lookup).
    fn plain(s: &mut Session, prompt: &[u32], params: &GenerateParams) -> (String, Vec<u32>) {
        let saved = std::mem::replace(&mut s.config.prompt_lookup, 0);
        let mut text = String::new();
        s.generate(prompt, params, &AtomicBool::new(false), &mut |t| text.push_str(t)).unwrap();
        s.config.prompt_lookup = saved;
        (text, s.last_tokens.clone())
    }

    /// A sequence that has read its prompt, its first token `plain[0]`
    /// queued; then `drafts` checked in one pass: returns how many were
    /// kept, and the text and tokens once the sequence runs to its end.
    fn check(s: &mut Session, prompt: &[u32], params: &GenerateParams, first: u32, drafts: &[u32]) -> (usize, String, Vec<u32>) {
        let mut batch = Batch::default();
        batch.push(Sequence::new(s, 0, prompt.to_vec(), params.clone(), Arc::new(AtomicBool::new(false))).unwrap());
        let mut out = Vec::new();
        while !batch.seqs[0].decoding() {
            batch.prefill(s, &mut out);
        }
        let seq = &mut batch.seqs[0];
        let go_on = seq.verify(s, first, drafts, &mut out).unwrap();
        let kept = seq.stats.accepted_draft_tokens;
        let held = prompt.len() + 1 + kept;
        assert!(seq.cache.tokens.len() <= held && seq.cache.layers.iter().all(|c| c.offset() as usize == seq.cache.tokens.len()), "the cache is cut back to what was kept");
        if go_on {
            out.extend(batch.step(s));
        } else {
            batch.seqs.remove(0).finish(s, &mut out);
        }
        while !batch.is_empty() {
            out.extend(batch.step(s));
        }
        let mut text = String::new();
        let mut tokens = Vec::new();
        for o in out {
            match o {
                Out::Text { text: t, .. } => text.push_str(&t),
                Out::Done { tokens: t, stats, .. } => {
                    tokens = t;
                    assert_ne!(stats.finish_reason, Some(FinishReason::Cancelled));
                }
                Out::Failed { error, .. } => panic!("{error}"),
            }
        }
        (kept, text, tokens)
    }

    #[test]
    fn checked_proposals_keep_the_plain_greedy_reply_wherever_they_are_rejected() {
        let mut s = session();
        let (prompt, _) = s.prompt_for_messages(&[Message::user("Name three colours of the rainbow.")], 0).unwrap();
        let params = greedy(16, &[]);
        let (text, g) = plain(&mut s, &prompt, &params);
        assert_eq!(g.len(), 16, "{text:?}");
        let wrong = |t: u32| if t == 1 { 2 } else { 1 };
        // Rejected at the first proposal, at the last, not at all.
        let cases: [(Vec<u32>, usize); 3] = [
            (vec![wrong(g[1]), g[2], g[3]], 0),
            (vec![g[1], g[2], g[3], wrong(g[4])], 3),
            (g[1..6].to_vec(), 5),
        ];
        for (drafts, want) in cases {
            let (kept, got_text, got) = check(&mut s, &prompt, &params, g[0], &drafts);
            assert_eq!(kept, want, "{drafts:?}");
            assert_eq!((got_text.as_str(), &got), (text.as_str(), &g), "proposals {drafts:?}");
        }
    }

    #[test]
    fn a_stop_string_inside_a_kept_run_ends_the_reply_there() {
        let mut s = session();
        let (prompt, _) = s.prompt_for_messages(&[Message::user("Count from one to ten in words.")], 0).unwrap();
        let (_, g) = plain(&mut s, &prompt, &greedy(12, &[]));
        // A stop string made of the third proposal's text: the plain reply
        // with that stop, and the checked one, end alike.
        let stop = s.loaded.tokenizer.decode(&g[3..4]);
        let stop = stop.trim();
        assert!(!stop.is_empty(), "{g:?}");
        let params = greedy(12, &[stop]);
        let (want_text, want) = plain(&mut s, &prompt, &params);
        let (kept, text, got) = check(&mut s, &prompt, &params, g[0], &g[1..8]);
        assert_eq!(kept, 7, "every proposal matches the greedy reply");
        assert_eq!((text.as_str(), &got), (want_text.as_str(), &want));
        assert!(got.len() < 8 && !text.contains(stop), "{text:?} {got:?}");
    }

    /// SmolLM2 drafting for itself: greedy replies equal plain decoding
    /// (every guess is the model's own, so all are kept); a sampled reply
    /// rejects many greedy guesses (the draft's cache rolls back with them)
    /// and is reproducible with a seed; a draft with another tokenizer
    /// (Gemma 3) is refused and the model decodes without one. (The draft at
    /// another precision would disagree now and then, but MLX's 4-bit CPU
    /// matmul takes minutes for it here.)
    #[test]
    fn a_draft_model_keeps_greedy_replies_and_another_tokenizer_is_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/models");
        let load = |f: &str| crate::models::load::load(&dir.join(f), crate::models::load::Precision::Auto).unwrap();
        let mut s = session();
        s.set_draft(Some(load("SmolLM2-135M-Instruct.Q4_1.gguf"))).unwrap();
        let generate = |s: &mut Session, prompt: &[u32], params: &GenerateParams| {
            let mut text = String::new();
            let st = s.generate(prompt, params, &AtomicBool::new(false), &mut |t| text.push_str(t)).unwrap();
            (text, st)
        };
        let (mut drafted, mut kept) = (0, 0);
        for q in ["Name three colours of the rainbow.", "Write a haiku about snow.", "Explain what a compiler does."] {
            let (prompt, _) = s.prompt_for_messages(&[Message::user(q)], 0).unwrap();
            let params = greedy(32, &[]);
            let (want, _) = plain_without_draft(&mut s, &prompt, &params);
            let (text, st) = generate(&mut s, &prompt, &params);
            assert_eq!(text, want, "{q}");
            (drafted, kept) = (drafted + st.draft_tokens, kept + st.accepted_draft_tokens);
        }
        assert!(drafted > 40 && kept == drafted, "{kept} of {drafted} guesses kept");
        let (prompt, _) = s.prompt_for_messages(&[Message::user("Tell me a story about a fox.")], 0).unwrap();
        let sampled = GenerateParams { sampling: SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, seed: Some(9), ..SamplingParams::greedy() }, ..greedy(48, &[]) };
        let (a, st) = generate(&mut s, &prompt, &sampled);
        assert!(st.accepted_draft_tokens < st.draft_tokens && st.generated_tokens == 48, "{st:?}");
        assert_eq!(generate(&mut s, &prompt, &sampled).0, a, "a seed reproduces a sampled reply");
        s.set_draft(None).unwrap();
        let err = s.set_draft(Some(load("gemma-3-270m-q4_k_m.gguf"))).unwrap_err();
        assert!(err.to_string().contains("tokenizers differ") && s.draft.is_none(), "{err}");
    }

    /// `plain`, with the draft set aside for the run.
    fn plain_without_draft(s: &mut Session, prompt: &[u32], params: &GenerateParams) -> (String, Vec<u32>) {
        let draft = s.draft.take();
        let r = plain(s, prompt, params);
        s.draft = draft;
        r
    }

    #[test]
    fn the_longest_recent_run_seen_before_proposes_what_followed_it() {
        // "5 6 7" occurred at 1..4 and at 6..9; the suffix "6 7" was last seen at 7.
        let h = [1, 5, 6, 7, 8, 9, 5, 6, 7, 4, 2, 6, 7];
        assert_eq!(propose(&h, 3), vec![4, 2, 6]);
        assert_eq!(propose(&h, 10), vec![4, 2, 6, 7], "no further than the history goes");
        // A 4-token match wins over a more recent 2-token one.
        let h = [1, 2, 3, 4, 10, 3, 4, 11, 1, 2, 3, 4];
        assert_eq!(propose(&h, 2), vec![10, 3]);
        assert!(propose(&[1, 2, 3, 4, 5], 4).is_empty(), "nothing repeats");
        assert!(propose(&[7, 7], 4).is_empty(), "one token is too short a run");
        assert!(propose(&[1, 2, 1, 2], 0).is_empty() && propose(&[], 3).is_empty());
        assert_eq!(propose(&[1, 2, 1, 2], 5), vec![1, 2]);
    }

    #[test]
    fn rejected_passes_pause_longer_each_time_until_one_is_kept_and_guesses_follow_what_is_kept() {
        let h = [1, 2, 3, 1, 2];
        let mut l = Speculation::new(4);
        for _ in 0..STRIKES {
            assert!(l.ready());
            assert_eq!(l.propose(&h, 4), vec![3, 1, 2]);
            l.record(0, 3);
        }
        for _ in 0..PAUSE_MIN {
            assert!(!l.ready(), "paused");
        }
        assert!(l.ready());
        assert_eq!(l.propose(&h, 2), vec![3, 1], "the room bounds a proposal");
        for _ in 0..STRIKES {
            l.record(0, 3);
        }
        assert_eq!(l.pause_left, 2 * PAUSE_MIN, "the next pause is longer");
        l.pause_left = 0;
        l.record(1, 3);
        assert_eq!((l.strikes, l.pause), (0, PAUSE_MIN), "a kept proposal resets it");
        // A draft's guess grows while whole guesses are kept, shrinks while most of one is not.
        let len = l.draft_len;
        l.record(4, 4);
        assert_eq!(l.draft_len, len + 1);
        for _ in 0..20 {
            l.record(0, 4);
        }
        assert_eq!(l.draft_len, 1);
    }
}
