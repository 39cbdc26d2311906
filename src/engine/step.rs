//! A sequence's prompt cache and its prefill (mlx-lm's `generate_step`, first
//! half): reuse the cached prefix of the prompt, run the rest in chunks. The
//! token loop itself is the batch's (`batch`), which steps every sequence.

use crate::error::{Error, Result};
use crate::models::cache::{quantize_kv, Cache, CacheState, KvQuant, LayerCache};
use crate::models::nn::layers::token_array;
use crate::models::{Head, LanguageModel};
use mlx_rs::transforms::eval;
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
    /// How its full KV caches store keys and values (None: the model's dtype).
    pub kv_quant: Option<KvQuant>,
}

pub use crate::models::cache::MAX_SNAPSHOTS;

struct Snapshot {
    len: usize,
    /// One entry per layer: the state of a state layer (`LayerCache::state`),
    /// None for KV layers.
    states: Vec<Option<CacheState>>,
}

impl PromptCache {
    pub fn new(model: &dyn LanguageModel) -> Self {
        Self::with_kv_quant(model, None)
    }

    /// An empty cache whose full KV layers store keys and values quantized.
    pub fn with_kv_quant(model: &dyn LanguageModel, kv_quant: Option<KvQuant>) -> Self {
        PromptCache { layers: quantize_kv(model.new_cache(), kv_quant), tokens: Vec::new(), snapshots: Vec::new(), kv_quant }
    }

    /// Empty again, stored as before.
    pub fn clear(&mut self, model: &dyn LanguageModel) {
        *self = Self::with_kv_quant(model, self.kv_quant);
    }

    /// Bytes its arrays hold (the KV buffers as allocated, state snapshots
    /// included), for the prefix cache's memory bound.
    pub fn nbytes(&self) -> u64 {
        let layers = self.layers.iter().flat_map(|c| c.arrays());
        let snaps = self.snapshots.iter().flat_map(|s| s.states.iter().flatten()).flat_map(|s| s.arrays.iter().flatten());
        layers.chain(snaps).map(|a| a.nbytes() as u64).sum()
    }

    pub fn is_hybrid(&self) -> bool {
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
            .map(|c| c.is_state().then(|| c.state()))
            .collect();
        self.snapshots.push(Snapshot { len, states });
        if self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.remove(0);
        }
    }

    /// After a prompt piece that is not the last: the hybrid state snapshot
    /// one token short of the prompt's end (where a regenerated reply resumes).
    pub fn snapshot_if_one_short(&mut self, prompt_len: usize) {
        if self.tokens.len() + 1 == prompt_len {
            self.snapshot();
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
            self.clear(model);
            return 0;
        };
        let snap = &self.snapshots[i];
        let len = snap.len;
        let mut restored = true;
        for (c, s) in self.layers.iter_mut().zip(&snap.states) {
            match s {
                Some(s) => restored &= c.set_state(s.clone()).is_ok(),
                None => c.truncate(len as i32),
            }
        }
        if !restored {
            // A snapshot that no longer fits its layer (never expected): start over.
            self.clear(model);
            return 0;
        }
        self.tokens.truncate(len);
        len
    }
}

pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The part of `prompt` the cache does not hold yet, as the pieces to run:
/// the cache is first made to hold the longest prefix it can reach (cut
/// back, or resumed from a snapshot), and that length is returned with the
/// pieces. At least one token runs, to get logits. Chunks bound memory on
/// long prompts; hybrid models stop one token short of the end, to snapshot
/// their state there (a regenerated reply resumes from it).
pub fn plan_prefill(model: &dyn LanguageModel, cache: &mut PromptCache, prompt: &[u32], chunk: usize) -> (usize, Vec<std::ops::Range<usize>>) {
    let reuse = common_prefix(&cache.tokens, prompt).min(prompt.len().saturating_sub(1));
    // A sliding-window cache may have dropped part of the prefix, a state
    // cannot go back at all: resume from what can be reached.
    let reuse = cache.rewind(model, reuse);
    let end = prompt.len();
    let split = if cache.is_hybrid() && end - reuse > 1 { end - 1 } else { end };
    let chunk = chunk.max(1);
    let mut pieces: Vec<std::ops::Range<usize>> = (reuse..split).step_by(chunk).map(|s| s..(s + chunk).min(split)).collect();
    if split < end {
        pieces.push(split..end);
    }
    (reuse, pieces)
}

/// Runs one piece of a prefill (`plan_prefill`); returns its last position's
/// logits when `last`, else evaluates the cache (so the chunk's buffers are
/// freed before the next) and snapshots a hybrid state one token short of
/// the prompt's end. On a model error the cache is emptied, since it may
/// hold half a chunk.
pub fn prefill_piece(model: &dyn LanguageModel, cache: &mut PromptCache, prompt: &[u32], piece: std::ops::Range<usize>, last: bool) -> Result<Option<Array>> {
    let chunk = &prompt[piece];
    let out = match model.logits(&token_array(chunk), &mut cache.layers, Head::Last(1)) {
        Ok(o) => o,
        Err(e) => {
            cache.clear(model);
            return Err(e);
        }
    };
    cache.tokens.extend_from_slice(chunk);
    if last {
        return Ok(Some(out));
    }
    eval(cache.layers.iter().flat_map(|c| c.arrays()))?;
    cache.snapshot_if_one_short(prompt.len());
    Ok(None)
}

/// Runs the part of `prompt` the cache does not hold yet; returns the logits of
/// the last position and how many prompt tokens were reused.
pub fn prefill(model: &dyn LanguageModel, cache: &mut PromptCache, prompt: &[u32], chunk: usize) -> Result<(Array, usize)> {
    let (reuse, pieces) = plan_prefill(model, cache, prompt, chunk);
    let n = pieces.len();
    let mut logits = None;
    for (i, piece) in pieces.into_iter().enumerate() {
        logits = prefill_piece(model, cache, prompt, piece, i + 1 == n)?;
    }
    Ok((logits.ok_or(Error::EmptyPrompt)?, reuse))
}

/// Where the host's time goes in a decode step (`batch`), summed over all decode steps
/// since the last `take`: building step n+1's graph (`model.forward` and
/// sampling), handing it to the device (`async_eval`: on GPUs MLX encodes
/// every kernel launch here), and waiting for token n. Read by `hearth bench`:
/// a wait near zero means the host, not the device, sets the pace.
pub mod host_clock {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub(crate) static BUILD: AtomicU64 = AtomicU64::new(0);
    pub(crate) static QUEUE: AtomicU64 = AtomicU64::new(0);
    pub(crate) static WAIT: AtomicU64 = AtomicU64::new(0);
    static STEPS: AtomicU64 = AtomicU64::new(0);

    pub(crate) fn add(part: &AtomicU64, since: std::time::Instant) {
        part.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn step() {
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

/// Writes one decode step's graph (every op MLX will encode for it) to
/// `path` in Graphviz form, for counting the ops a layer costs
/// (`EngineConfig::graph_dot`, `scripts/gpu/graph_ops.py`).
pub(crate) fn dump_graph(logits: &mlx_rs::Array, path: &std::path::Path) {
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

/// Finishes queued work so the cache is concrete for the next turn, and
/// snapshots a hybrid model's state at the end of the reply.
pub fn settle(cache: &mut PromptCache) -> Result<()> {
    eval(cache.layers.iter().flat_map(|c| c.arrays()))?;
    cache.snapshot();
    Ok(())
}
