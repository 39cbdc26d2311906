//! Continuous batching (mlx-lm's `BatchGenerator`, llama-server's slots): the
//! sequences the engine serves at once, stepped together by one loop.
//!
//! Each request becomes a `Sequence` with everything of its own: prompt
//! cache, sampler, structured-output constraint, detokenizer and stop
//! strings, statistics and cancel flag. A step runs one prefill chunk of the
//! oldest sequence still reading its prompt, then one decode step for every
//! sequence past it, in one forward pass over all their rows
//! (`LanguageModel::forward`). Sequences join and leave between steps;
//! one that fails (a bad schema, a context overflow) fails alone.
//!
//! A decode step keeps the device ahead of the host, as mlx-lm's
//! `generate_step`: it queues step n+1 (`async_eval`) before it reads token n.
//! A constrained row cannot: its next mask needs its last token. It still
//! shares the batch's forward pass, and its mask is computed on the host
//! while the device runs that pass.

use super::protocol::RequestId;
use super::sampling::Scores;
use super::sequence::{read_id, Phase};
use super::session::Session;
use super::step::{self, host_clock};
use crate::chat::params::FinishReason;
use crate::error::{Error, Result};
use super::merged::{merge_rows, Merged};
use crate::models::cache::{Cache, LayerCache};
use crate::models::nn::layers::token_array;
use crate::models::{ForwardCtx, Head, Input};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::transforms::async_eval;
use mlx_rs::Array;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub use super::sequence::{Out, Sequence};

/// The sequences being served, in arrival order.
#[derive(Default)]
pub struct Batch {
    pub(super) seqs: Vec<Sequence>,
    /// Decode steps since the batch was last empty (graph dump, memory events).
    steps: usize,
    /// The decoding rows' caches merged into one per layer, for models that
    /// take them (`LanguageModel::merges_caches`): kept while two or more
    /// rows decode, rows leaving and joining it between steps (`merged`).
    merged: Option<Merged>,
}

/// The index among the fed rows' inputs (in batch order) of batch slot `k`.
fn fed_slot(fed: &[bool], k: usize) -> usize {
    fed[..k].iter().filter(|f| **f).count()
}

impl Batch {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn push(&mut self, s: Sequence) {
        self.seqs.push(s);
    }

    /// Cancels every sequence (they end at the next step).
    pub fn cancel_all(&self) {
        for s in &self.seqs {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Runs one step: one prefill chunk, then one decode step for every
    /// sequence past its prompt. What happened comes back as `Out`s.
    pub fn step(&mut self, session: &mut Session) -> Vec<Out> {
        let mut out = Vec::new();
        // Cancelled before their first token: they end now, at no cost.
        let mut i = 0;
        while i < self.seqs.len() {
            if !self.seqs[i].decoding() && self.seqs[i].cancel.load(Ordering::Relaxed) {
                let mut s = self.seqs.remove(i);
                s.reason = Some(FinishReason::Cancelled);
                s.finish(session, &mut out);
            } else {
                i += 1;
            }
        }
        self.prefill(session, &mut out);
        if let Err((ids, error)) = self.decode(session, &mut out) {
            // A failed batched pass leaves its rows' caches half written:
            // those rows fail, with the same error.
            self.merged = None;
            let msg = error.to_string();
            let mut failed = Vec::new();
            self.seqs.retain_mut(|s| {
                let hit = ids.contains(&s.id);
                if hit {
                    failed.push(s.id);
                }
                !hit
            });
            for id in failed {
                out.push(Out::Failed { id, error: Error::Mlx(msg.clone()) });
            }
        }
        if self.seqs.is_empty() {
            self.steps = 0;
        }
        out
    }

    /// One piece of prompt for the sequences still reading theirs: the
    /// oldest, and with it, in one forward pass over their rows, the next
    /// ones in arrival order while the pass holds at most a prefill chunk's
    /// tokens (rows × length: the token budget). The rows run the same
    /// length, the shortest of their next pieces (the rest of a longer piece
    /// waits for the next step), so one pass serves a burst of new requests
    /// where one sequence per step made the last wait for all the others.
    /// At a sequence's last piece its first token is sampled and it joins the
    /// decode rows.
    pub(super) fn prefill(&mut self, session: &mut Session, out: &mut Vec<Out>) {
        let budget = session.config.prefill_chunk.max(1);
        let mut chosen: Vec<usize> = Vec::new();
        let mut len = 0;
        for (i, s) in self.seqs.iter().enumerate() {
            let Phase::Prefill(pieces) = &s.phase else { continue };
            let n = pieces.front().map_or(0, |p| p.len());
            let l = if chosen.is_empty() { n } else { len.min(n) };
            if !chosen.is_empty() && (n == 0 || (chosen.len() + 1) * l > budget) {
                break;
            }
            chosen.push(i);
            len = l;
            if len == 0 {
                break;
            }
        }
        match chosen.len() {
            0 => {}
            1 => self.prefill_one(chosen[0], session, out),
            _ => self.prefill_rows(&chosen, len, session, out),
        }
    }

    /// The next piece of sequence `i` alone.
    fn prefill_one(&mut self, i: usize, session: &mut Session, out: &mut Vec<Out>) {
        let model = &*session.loaded.model;
        let tok = &session.loaded.tokenizer;
        let s = &mut self.seqs[i];
        let result = (|| {
            let Phase::Prefill(pieces) = &mut s.phase else { return Ok(true) };
            let piece = pieces.pop_front().ok_or(Error::EmptyPrompt)?;
            let last = pieces.is_empty();
            match step::prefill_piece(model, &mut s.cache, &s.prompt, piece, last)? {
                Some(logits) => s.first_token_after_prefill(&logits, tok, out),
                None => Ok(true),
            }
        })();
        self.after_prefill(vec![(i, result)], session, out);
    }

    /// The next `len` prompt tokens of each sequence in `chosen` (indices in
    /// order) in one pass over their rows (`LanguageModel::forward`).
    /// A failed pass fails its rows (their caches may hold half a piece).
    fn prefill_rows(&mut self, chosen: &[usize], len: usize, session: &mut Session, out: &mut Vec<Out>) {
        let model = &*session.loaded.model;
        let tok = &session.loaded.tokenizer;
        let mut rows: Vec<&mut Sequence> = self.seqs.iter_mut().enumerate().filter(|(i, _)| chosen.contains(i)).map(|(_, s)| s).collect();
        // Each row's slice of its prompt, and whether it ends the prompt.
        let mut spans = Vec::with_capacity(rows.len());
        for s in rows.iter_mut() {
            let Phase::Prefill(pieces) = &mut s.phase else { unreachable!("chosen rows are prefilling") };
            let front = pieces.front_mut().expect("chosen rows have a piece");
            let span = front.start..front.start + len;
            front.start += len;
            if front.start >= front.end {
                pieces.pop_front();
            }
            spans.push((span, pieces.is_empty()));
        }
        let pass = (|| -> Result<Array> {
            let ids: Vec<Array> = rows.iter().zip(&spans).map(|(s, (span, _))| token_array(&s.prompt[span.clone()])).collect();
            let tokens = mlx_rs::ops::concatenate(&ids, 0)?;
            let mut caches: Vec<&mut [Cache]> = rows.iter_mut().map(|s| &mut s.cache.layers[..]).collect();
            model.forward(Input::tokens(&tokens), &mut ForwardCtx::new(&mut caches, Head::Last(1)))?.logits()
        })();
        let logits = match pass {
            Ok(l) => l,
            Err(error) => {
                let msg = error.to_string();
                for s in rows.iter_mut() {
                    s.cache.clear(model);
                }
                let results = chosen.iter().map(|&i| (i, Err(Error::Mlx(msg.clone())))).collect();
                return self.after_prefill(results, session, out);
            }
        };
        let mut results = Vec::with_capacity(rows.len());
        let mut settle: Vec<Array> = Vec::new();
        for (j, (s, (span, last))) in rows.iter_mut().zip(spans).enumerate() {
            s.cache.tokens.extend_from_slice(&s.prompt[span]);
            let r = if last {
                s.first_token_after_prefill(&logits.index(j as i32..j as i32 + 1), tok, out)
            } else {
                settle.extend(s.cache.layers.iter().flat_map(|c| c.arrays()).cloned());
                Ok(true)
            };
            results.push((chosen[j], r));
        }
        // Rows with more prompt to come: their cache concrete now, so the
        // piece's buffers are freed, and a hybrid state snapshot one token
        // short of the prompt's end (as `step::prefill_piece` does alone).
        if !settle.is_empty() {
            if let Err(e) = mlx_rs::transforms::eval(settle.iter()) {
                let msg = e.to_string();
                for (_, r) in results.iter_mut() {
                    *r = Err(Error::Mlx(msg.clone()));
                }
            }
            for s in rows.iter_mut().filter(|s| !s.decoding()) {
                s.cache.snapshot_if_one_short(s.prompt.len());
            }
        }
        self.after_prefill(results, session, out);
    }

    /// Moves prefilled sequences on: those that ended (their first token
    /// was the last) finish, those that failed leave with their error.
    fn after_prefill(&mut self, mut results: Vec<(usize, Result<bool>)>, session: &mut Session, out: &mut Vec<Out>) {
        // From the back, so the indices still hold as sequences leave.
        results.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, result) in results {
            match result {
                Ok(true) => {}
                Ok(false) => {
                    let s = self.seqs.remove(i);
                    s.finish(session, out);
                }
                Err(error) => {
                    let s = self.seqs.remove(i);
                    out.push(Out::Failed { id: s.id, error });
                }
            }
        }
    }

    /// One decode step for every decoding sequence. On an error in the
    /// shared pass, the ids of the rows it covered.
    fn decode(&mut self, session: &mut Session, out: &mut Vec<Out>) -> std::result::Result<(), (Vec<RequestId>, Error)> {
        let ctx = session.context_length;
        // The rows fed back this step: every decoding sequence that may take another token.
        let fed: Vec<bool> = self.seqs.iter().map(|s| s.decoding() && s.more(ctx)).collect();
        let fed_ids: Vec<RequestId> = self.seqs.iter().zip(&fed).filter(|(_, f)| **f).map(|(s, _)| s.id).collect();
        let rows = fed_ids.len();
        if !self.seqs.iter().any(|s| s.decoding()) {
            return Ok(());
        }
        let fail = |e: Error| (fed_ids.clone(), e);
        if rows == 1 && self.merged.is_none() && self.seqs.iter().filter(|s| s.decoding()).count() == 1 && self.speculate(session, out).map_err(fail)? {
            return Ok(());
        }
        let model = &*session.loaded.model;
        // Build and queue step n+1 for the fed rows.
        let mut logits_rows: Vec<Option<Array>> = vec![None; self.seqs.len()];
        if rows > 0 {
            let t = Instant::now();
            let inputs: Vec<Array> = self
                .seqs
                .iter()
                .zip(&fed)
                .filter(|(_, f)| **f)
                .map(|(s, _)| match &s.phase {
                    Phase::Decode { token, .. } => token.reshape(&[1, 1]),
                    Phase::Prefill(_) => unreachable!("only decoding rows are fed"),
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| fail(e.into()))?;
            // Merged caches while two or more rows decode: rows that stop being
            // fed leave them, rows that start join at the end, so the pass's
            // row order is the merged one.
            let merge = model.merges_caches() && rows > 1;
            self.sync_merged(merge, &fed_ids).map_err(fail)?;
            let order: Vec<RequestId> = self.merged.as_ref().map_or_else(|| fed_ids.clone(), |m| m.ids.clone());
            let position = |id: &RequestId| self.seqs.iter().position(|s| s.id == *id).expect("fed rows are in the batch");
            let slots: Vec<usize> = order.iter().map(position).collect();
            let inputs: Vec<&Array> = slots.iter().map(|&k| &inputs[fed_slot(&fed, k)]).collect();
            let tokens = if rows == 1 { inputs[0].clone() } else { mlx_rs::ops::concatenate(&inputs, 0).map_err(|e| fail(e.into()))? };
            let mut caches: Vec<&mut [Cache]> = match &mut self.merged {
                Some(m) => vec![&mut m.layers[..]],
                None => self.seqs.iter_mut().zip(&fed).filter(|(_, f)| **f).map(|(s, _)| &mut s.cache.layers[..]).collect(),
            };
            let logits = model.forward(Input::tokens(&tokens), &mut ForwardCtx::new(&mut caches, Head::Last(1))).and_then(|o| o.logits()).map_err(fail)?;
            for (j, &k) in slots.iter().enumerate() {
                let j = j as i32;
                logits_rows[k] = Some(if rows == 1 { logits.clone() } else { logits.index(j..j + 1) });
            }
            host_clock::add(&host_clock::BUILD, t);
            if let (2, Some(path)) = (self.steps, &session.config.graph_dot) {
                step::dump_graph(&logits, path);
            }
            host_clock::step();
            self.steps += 1;
            // Free rows sample now and are queued with the pass; constrained
            // rows sample after it, once their masks are computed.
            let mut queue: Vec<Array> = Vec::new();
            let mut next: Vec<Option<(Array, Option<Scores>)>> = Vec::with_capacity(self.seqs.len());
            for (s, l) in self.seqs.iter_mut().zip(&logits_rows) {
                match (l, &s.constraint) {
                    // A row whose next tokens are forced, or that fed a forced one
                    // (read already), takes its next after the pass, as a constrained one.
                    (Some(l), None) if !s.forcing() && !matches!(s.phase, Phase::Decode { read: true, .. }) => {
                        let (y, sc) = s.sampler.sample_scored(l).map_err(fail)?;
                        queue.push(y.clone());
                        queue.extend(sc.iter().flat_map(|x| x.arrays()).cloned());
                        next.push(Some((y, sc)));
                    }
                    (Some(l), _) => {
                        queue.push(l.clone());
                        next.push(None);
                    }
                    (None, _) => next.push(None),
                }
            }
            let t = Instant::now();
            async_eval(queue.iter()).map_err(|e| fail(e.into()))?;
            host_clock::add(&host_clock::QUEUE, t);
            self.read_step(session, &fed, logits_rows, next, out);
        } else {
            self.read_step(session, &fed, logits_rows, Vec::new(), out);
        }
        if rows > 0 {
            for s in &mut self.seqs {
                s.stats.batch_rows = s.stats.batch_rows.max(rows);
            }
        }
        Ok(())
    }

    /// Brings the merged caches to exactly the rows `fed_ids` (or none,
    /// where `merge` is off): rows no longer fed go back to their sequences,
    /// rows newly fed join at the end.
    fn sync_merged(&mut self, merge: bool, fed_ids: &[RequestId]) -> Result<()> {
        let merge_fed = |seqs: &mut Vec<Sequence>| {
            let mut rows: Vec<&mut Sequence> = seqs.iter_mut().filter(|s| fed_ids.contains(&s.id)).collect();
            merge_rows(&mut rows)
        };
        let Some(m) = self.merged.take() else {
            if merge {
                self.merged = Some(merge_fed(&mut self.seqs)?);
            }
            return Ok(());
        };
        if !merge {
            m.unmerge(self.seqs.iter_mut());
            return Ok(());
        }
        let leaving: Vec<RequestId> = m.ids.iter().copied().filter(|id| !fed_ids.contains(id)).collect();
        let m = if leaving.is_empty() { Some(m) } else { m.release(&leaving, self.seqs.iter_mut()) };
        let Some(mut m) = m else {
            self.merged = Some(merge_fed(&mut self.seqs)?);
            return Ok(());
        };
        let joining: Vec<&mut Sequence> = self.seqs.iter_mut().filter(|s| fed_ids.contains(&s.id) && !m.ids.contains(&s.id)).collect();
        if !joining.is_empty() {
            if let Err(e) = m.extend(joining) {
                m.unmerge(self.seqs.iter_mut());
                return Err(e);
            }
        }
        self.merged = Some(m);
        Ok(())
    }

    /// Reads each decoding row's token (the one fed this step, or the last
    /// of a row that stops here) and moves the row on or out.
    fn read_step(
        &mut self,
        session: &mut Session,
        fed: &[bool],
        logits_rows: Vec<Option<Array>>,
        mut next: Vec<Option<(Array, Option<Scores>)>>,
        out: &mut Vec<Out>,
    ) {
        next.resize_with(self.seqs.len(), || None);
        let tok = &session.loaded.tokenizer;
        let mut keep = Vec::with_capacity(self.seqs.len());
        let seqs = std::mem::take(&mut self.seqs);
        let mut ended = Vec::new();
        for (((mut s, f), l), nx) in seqs.into_iter().zip(fed).zip(logits_rows).zip(next) {
            let result: Result<bool> = (|| {
                let phase = std::mem::replace(&mut s.phase, Phase::Prefill(VecDeque::new()));
                let Phase::Decode { token, scores, read } = phase else {
                    s.phase = phase;
                    return Ok(true);
                };
                if read {
                    // Constrained: the token fed was read last step; its
                    // successor is sampled from this step's logits now.
                    let Some(l) = l else { return Ok(false) };
                    s.cache.tokens.push(read_id(&token)?);
                    return s.sample(&l, tok, out);
                }
                let t = Instant::now();
                let id = read_id(&token)?;
                host_clock::add(&host_clock::WAIT, t);
                if *f {
                    s.cache.tokens.push(id);
                }
                let go_on = s.accept(id, scores.as_ref(), tok, out)?;
                match (nx, &l) {
                    // Forced from this step on (a reasoning budget ran out as
                    // this token was read): a free draw made with the pass is dropped.
                    (_, Some(l)) if go_on && s.forcing() => s.sample(l, tok, out),
                    (Some((token, scores)), _) if go_on => {
                        s.taken += 1;
                        s.phase = Phase::Decode { token, scores, read: false };
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })();
            match result {
                Ok(true) => keep.push(s),
                Ok(false) => ended.push(s),
                Err(error) => out.push(Out::Failed { id: s.id, error }),
            }
        }
        // A row that ends takes its cache with it, out of the merged ones.
        if let Some(m) = self.merged.take() {
            let leaving: Vec<RequestId> = ended.iter().map(|s| s.id).filter(|id| m.ids.contains(id)).collect();
            self.merged = if leaving.is_empty() { Some(m) } else { m.release(&leaving, keep.iter_mut().chain(ended.iter_mut())) };
        }
        self.seqs = keep;
        for s in ended {
            s.finish(session, out);
        }
    }
}
