//! The token loop (mlx-lm's `generate_step`): reuse the cached prefix of the
//! prompt, prefill the rest in chunks, then sample token after token, queueing
//! step n+1 on the device (`async_eval`) before token n is read on the host.
//! It knows nothing of text: the caller decides after each token whether to go on.

use super::sampling::{Sampler, Scores};
use crate::error::{Error, Result};
use crate::models::cache::{Cache, StateCache};
use crate::models::layers::token_array;
use crate::models::{prefill_chunk, LanguageModel};
use mlx_rs::transforms::{async_eval, eval};
use mlx_rs::Array;

/// The model's caches and the tokens they hold, kept between requests.
pub struct PromptCache {
    pub layers: Vec<Cache>,
    pub tokens: Vec<u32>,
    /// Hybrid models only: the state layers as they were after the first
    /// `len` tokens, taken at the end of each prompt but one token (so a
    /// regenerated reply reuses it too) and at the end of each reply (so a
    /// follow-up that repeats prompt + reply reuses everything). A state
    /// cannot be cut back like a KV cache; a snapshot lets a follow-up resume
    /// from the last one that is a prefix of its prompt. At most
    /// `MAX_SNAPSHOTS`, newest kept.
    snapshots: Vec<Snapshot>,
}

pub use crate::models::cache::MAX_SNAPSHOTS;

struct Snapshot {
    len: usize,
    /// One entry per layer: the state of a state layer, None for KV layers.
    states: Vec<Option<StateCache>>,
}

impl PromptCache {
    pub fn new(model: &dyn LanguageModel) -> Self {
        PromptCache { layers: model.new_cache(), tokens: Vec::new(), snapshots: Vec::new() }
    }

    fn is_hybrid(&self) -> bool {
        self.layers.iter().any(Cache::is_state)
    }

    /// Remembers the state layers as they are now (a no-op for models
    /// without state layers, or when a snapshot of this length exists).
    pub fn snapshot(&mut self) {
        let len = self.tokens.len();
        if !self.is_hybrid() || len == 0 || self.snapshots.iter().any(|s| s.len == len) {
            return;
        }
        let states = self
            .layers
            .iter()
            .map(|c| match c {
                Cache::State(s) => Some(s.clone()),
                Cache::Kv(_) => None,
            })
            .collect();
        self.snapshots.push(Snapshot { len, states });
        if self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.remove(0);
        }
    }

    /// Makes the cache hold exactly `prompt[..n]` for the largest `n <= reuse`
    /// it can reach (cutting KV layers back, restoring state layers from a
    /// snapshot), and returns `n`.
    fn rewind(&mut self, model: &dyn LanguageModel, reuse: usize) -> usize {
        // Snapshots past the shared prefix describe another conversation.
        self.snapshots.retain(|s| s.len <= reuse);
        if self.layers.iter().all(|c| c.can_truncate(reuse as i32)) {
            for c in &mut self.layers {
                c.truncate(reuse as i32);
            }
            self.tokens.truncate(reuse);
            return reuse;
        }
        // The newest snapshot the KV layers can also go back to.
        let best = self
            .snapshots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                self.layers.iter().all(|c| c.is_state() || c.can_truncate(s.len as i32))
            })
            .max_by_key(|(_, s)| s.len)
            .map(|(i, _)| i);
        let Some(i) = best else {
            // Nothing to resume from: start over.
            self.layers = model.new_cache();
            self.tokens.clear();
            self.snapshots.clear();
            return 0;
        };
        let snap = &self.snapshots[i];
        let len = snap.len;
        for (c, s) in self.layers.iter_mut().zip(&snap.states) {
            match (c, s) {
                (Cache::State(c), Some(s)) => *c = s.clone(),
                (c, _) => c.truncate(len as i32),
            }
        }
        self.tokens.truncate(len);
        len
    }
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
    // A sliding-window cache may have dropped part of the prefix, a state
    // cannot go back at all: resume from what can be reached.
    let reuse = cache.rewind(model, reuse);
    let rest = &prompt[reuse..];
    // Hybrid models stop one token short to snapshot the state there.
    let split = if cache.is_hybrid() && rest.len() > 1 { rest.len() - 1 } else { rest.len() };
    let mut pieces: Vec<&[u32]> = rest[..split].chunks(prefill_chunk()).collect();
    if split < rest.len() {
        pieces.push(&rest[split..]);
    }
    let n = pieces.len();
    let mut logits = None;
    for (i, chunk) in pieces.into_iter().enumerate() {
        let out = match model.forward(&token_array(chunk), &mut cache.layers, false) {
            Ok(o) => o,
            Err(e) => {
                *cache = PromptCache::new(model);
                return Err(e);
            }
        };
        cache.tokens.extend_from_slice(chunk);
        if i + 1 < n {
            eval(cache.layers.iter().flat_map(|c| c.arrays()))?;
            if cache.tokens.len() + 1 == prompt.len() {
                cache.snapshot();
            }
        } else {
            logits = Some(out);
        }
    }
    let logits = logits.ok_or(Error::EmptyPrompt)?;
    Ok((logits, reuse))
}

/// What the token loops hand over per token: its id and, if the sampler
/// computes them, its scores.
pub type OnToken<'a> = dyn FnMut(u32, Option<&Scores>) -> bool + 'a;

/// Where the host's time goes in `decode`, summed over all decode steps
/// since the last `take`: building step n+1's graph (`model.forward` and
/// sampling), handing it to the device (`async_eval`: on GPUs MLX encodes
/// every kernel launch here), and waiting for token n. Read by `hearth bench`:
/// a wait near zero means the host, not the device, sets the pace.
pub mod host_clock {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub(super) static BUILD: AtomicU64 = AtomicU64::new(0);
    pub(super) static QUEUE: AtomicU64 = AtomicU64::new(0);
    pub(super) static WAIT: AtomicU64 = AtomicU64::new(0);
    static STEPS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn add(part: &AtomicU64, since: std::time::Instant) {
        part.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn step() {
        STEPS.fetch_add(1, Ordering::Relaxed);
    }

    /// Milliseconds per step (build, queue, wait) since the last call;
    /// zeroes the counters.
    pub fn take() -> [f64; 3] {
        let steps = STEPS.swap(0, Ordering::Relaxed);
        let per = |a: &AtomicU64| a.swap(0, Ordering::Relaxed) as f64 / 1e6 / steps.max(1) as f64;
        [per(&BUILD), per(&QUEUE), per(&WAIT)]
    }
}

/// With `HEARTH_GRAPH_DOT=file` set, writes one decode step's graph (every
/// op MLX will encode for it) to `file` in Graphviz form, for counting
/// the ops a layer costs (`scripts/gpu/graph_ops.py`).
fn dump_graph(logits: &mlx_rs::Array) {
    let Some(path) = std::env::var_os("HEARTH_GRAPH_DOT") else { return };
    let Ok(c) = std::ffi::CString::new(path.to_string_lossy().as_bytes()) else { return };
    unsafe {
        let f = libc::fopen(c.as_ptr(), c"w".as_ptr());
        if f.is_null() {
            return;
        }
        let outs = mlx_sys::mlx_vector_array_new();
        mlx_sys::mlx_vector_array_append_value(outs, logits.as_ptr());
        let namer = mlx_sys::mlx_node_namer_new();
        mlx_sys::mlx_export_to_dot(f as *mut mlx_sys::FILE, namer, outs);
        mlx_sys::mlx_node_namer_free(namer);
        mlx_sys::mlx_vector_array_free(outs);
        libc::fclose(f);
    }
}

/// Samples from `logits` and queues the result on the device.
fn sample_queued(sampler: &mut Sampler, logits: &Array) -> Result<(Array, Option<Scores>)> {
    let (y, scores) = sampler.sample_scored(logits)?;
    let mut arrays = vec![&y];
    if let Some(s) = &scores {
        arrays.extend(s.arrays());
    }
    let t = std::time::Instant::now();
    async_eval(arrays)?;
    host_clock::add(&host_clock::QUEUE, t);
    Ok((y, scores))
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
    on_token: &mut OnToken,
) -> Result<LoopEnd> {
    let (mut y, mut scores) = sample_queued(sampler, logits)?;
    let mut n = 0;
    loop {
        let room = cache.tokens.len() + 1 < context_length;
        let more = n + 1 < max_tokens && room;
        // Queue the next step before reading this token: the device works
        // on step n+1 while the host handles token n.
        let next = if more {
            let t = std::time::Instant::now();
            let l = model.forward(&y.reshape(&[1, 1])?, &mut cache.layers, false)?;
            host_clock::add(&host_clock::BUILD, t);
            if n == 2 {
                dump_graph(&l);
            }
            host_clock::step();
            Some(sample_queued(sampler, &l)?)
        } else {
            None
        };
        let t = std::time::Instant::now();
        let id = y.try_item_exact::<i32>().map_err(|e| Error::Mlx(e.to_string()))? as u32;
        host_clock::add(&host_clock::WAIT, t);
        n += 1;
        if next.is_some() {
            cache.tokens.push(id);
        }
        if !on_token(id, scores.as_ref()) {
            return Ok(LoopEnd::Stopped);
        }
        match next {
            Some(nx) => (y, scores) = nx,
            None => return Ok(if room { LoopEnd::MaxTokens } else { LoopEnd::ContextFull }),
        }
    }
}

/// `decode` for structured output: each token is sampled among those the
/// constraint allows. The mask for token n+1 needs token n, so there is no
/// queueing ahead; instead the host computes the mask while the device runs
/// the forward pass of token n.
#[allow(clippy::too_many_arguments)]
pub fn decode_constrained(
    model: &dyn LanguageModel,
    cache: &mut PromptCache,
    context_length: usize,
    logits: &Array,
    sampler: &mut Sampler,
    constraint: &mut super::constraint::Constraint,
    max_tokens: usize,
    on_token: &mut OnToken,
) -> Result<LoopEnd> {
    let mut logits = logits.clone();
    let mut n = 0;
    loop {
        let mask = constraint.mask()?;
        let (y, scores) = sampler.sample_scored(&logits.add(&mask)?)?;
        let id = y.try_item_exact::<i32>().map_err(|e| Error::Mlx(e.to_string()))? as u32;
        constraint.commit(id)?;
        n += 1;
        let room = cache.tokens.len() + 1 < context_length;
        let more = n < max_tokens && room;
        if more {
            // Queue the next forward pass; the mask is computed meanwhile.
            logits = model.forward(&y.reshape(&[1, 1])?, &mut cache.layers, false)?;
            async_eval([&logits])?;
            cache.tokens.push(id);
        }
        if !on_token(id, scores.as_ref()) {
            return Ok(LoopEnd::Stopped);
        }
        if !more {
            return Ok(if room { LoopEnd::MaxTokens } else { LoopEnd::ContextFull });
        }
    }
}

/// Finishes queued work so the cache is concrete for the next turn, and
/// snapshots a hybrid model's state at the end of the reply.
pub fn settle(cache: &mut PromptCache) -> Result<()> {
    eval(cache.layers.iter().flat_map(|c| c.arrays()))?;
    cache.snapshot();
    Ok(())
}
