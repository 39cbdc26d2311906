//! The engine's settings, read once when an engine starts and handed to what
//! uses them (the worker, the session, its batch), instead of process-wide
//! statics: two engines in one process (the tests) can differ, and a
//! benchmark prints what it ran with. The environment overrides the
//! defaults, for tuning and side-by-side runs.

use std::path::PathBuf;

/// Tokens per prefill pass by default: bounds peak memory on long prompts
/// (mlx-lm uses 2048 too). The fit estimate counts one such chunk.
pub use crate::models::DEFAULT_PREFILL_CHUNK;

/// Tokens proposed per prompt-lookup pass by default.
pub const DEFAULT_PROMPT_LOOKUP: usize = 8;

#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineConfig {
    /// Sequences served at once (`HEARTH_MAX_BATCH`, 1 to 64; default 8);
    /// later requests wait in arrival order, but for interactive ones.
    pub max_batch: usize,
    /// Tokens per prefill pass, and a batched prefill's token budget (rows x
    /// length; `HEARTH_PREFILL_CHUNK`, default 2048).
    pub prefill_chunk: usize,
    /// `HEARTH_GRAPH_DOT=file`: one decode step's graph written there in
    /// Graphviz form (`scripts/gpu/graph_ops.py` counts its ops).
    pub graph_dot: Option<PathBuf>,
    /// The most bytes the prefix cache keeps in finished sequences' caches
    /// (`HEARTH_PREFIX_CACHE_MB`; default an eighth of this machine's
    /// memory): the least recently used go first, the newest always stays.
    /// Without it four long agent prompts of an 8B model (4 GB of keys and
    /// values each at 32k tokens) would outgrow a 16 GB Mac.
    pub prefix_cache_bytes: u64,
    /// The most bytes a store of prompt caches on disk keeps (a `prompt-cache`
    /// folder whose entries are `prompt_file` folders; `HEARTH_PROMPT_CACHE_MB`,
    /// default 4096): past it the least recently used entries go.
    pub prompt_files_bytes: u64,
    /// MLX's cache of freed buffers (`HEARTH_MLX_CACHE_MB`; unset: MLX's own
    /// limit). MLX reuses a cached buffer only for a request within 32 kB of
    /// its size, so an agent turn, whose keys are a few dozen longer than the
    /// last turn's, meets none; with the cache small, freed memory goes back
    /// to CUDA's own pool, which serves any size (for the GPU A/B in
    /// docs/PERFORMANCE.md).
    pub mlx_cache_bytes: Option<u64>,
    /// Prompt lookup (`engine::speculate`): the most tokens proposed per
    /// pass, 0 for none (`HEARTH_PROMPT_LOOKUP`, 0 to 32).
    pub prompt_lookup: usize,
    /// Bits per key and value in full KV caches: 8 or 4 (quantized, a scale
    /// and bias per group of 64, as mlx-lm's `--kv-bits`), 0 for the
    /// model's dtype (`HEARTH_KV_BITS`, default 0).
    pub kv_bits: u8,
    /// The fused kernels this process runs (`models::kernels::Switches`).
    pub kernels: crate::models::kernels::Switches,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 8,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            graph_dot: None,
            prefix_cache_bytes: (crate::sys::total_memory() / 8).max(256 << 20),
            prompt_files_bytes: 4096 << 20,
            mlx_cache_bytes: None,
            prompt_lookup: DEFAULT_PROMPT_LOOKUP,
            kv_bits: 0,
            kernels: *crate::models::kernels::switches(),
        }
    }
}

pub use crate::models::cache::KV_BITS;

impl EngineConfig {
    /// How full KV caches are quantized, if they are (`kv_bits`).
    pub fn kv_quant(&self) -> Option<crate::models::cache::KvQuant> {
        crate::models::cache::KvQuant::new(self.kv_bits)
    }

    /// The defaults with the environment's overrides; values out of range
    /// keep the default.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let num = |k: &str, ok: std::ops::RangeInclusive<usize>, def: usize| var(k).and_then(|v| v.trim().parse().ok()).filter(|n| ok.contains(n)).unwrap_or(def);
        EngineConfig {
            max_batch: num("HEARTH_MAX_BATCH", 1..=64, d.max_batch),
            prefill_chunk: num("HEARTH_PREFILL_CHUNK", 1..=1 << 20, d.prefill_chunk),
            prompt_lookup: num("HEARTH_PROMPT_LOOKUP", 0..=32, d.prompt_lookup),
            kv_bits: var("HEARTH_KV_BITS").and_then(|v| v.trim().parse().ok()).filter(|b| KV_BITS.contains(b)).unwrap_or(d.kv_bits),
            graph_dot: var("HEARTH_GRAPH_DOT").filter(|v| !v.is_empty()).map(PathBuf::from),
            prefix_cache_bytes: var("HEARTH_PREFIX_CACHE_MB").and_then(|v| v.trim().parse::<u64>().ok()).map_or(d.prefix_cache_bytes, |mb| mb.saturating_mul(1 << 20)),
            mlx_cache_bytes: var("HEARTH_MLX_CACHE_MB").and_then(|v| v.trim().parse::<u64>().ok()).map(|mb| mb.saturating_mul(1 << 20)),
            prompt_files_bytes: var("HEARTH_PROMPT_CACHE_MB").and_then(|v| v.trim().parse::<u64>().ok()).map_or(d.prompt_files_bytes, |mb| mb.saturating_mul(1 << 20)),
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_in_range_values_only() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let c = EngineConfig::from_vars(vars(&[("HEARTH_MAX_BATCH", "16"), ("HEARTH_PREFILL_CHUNK", " 512 "), ("HEARTH_GRAPH_DOT", "/tmp/g.dot"), ("HEARTH_PREFIX_CACHE_MB", "3")]));
        assert_eq!(c.prefix_cache_bytes, 3 << 20);
        assert_eq!((c.max_batch, c.prefill_chunk, c.graph_dot.as_deref()), (16, 512, Some(std::path::Path::new("/tmp/g.dot"))));
        let c = EngineConfig::from_vars(vars(&[("HEARTH_MAX_BATCH", "0"), ("HEARTH_PREFILL_CHUNK", "lots"), ("HEARTH_GRAPH_DOT", "")]));
        assert_eq!((c.max_batch, c.prefill_chunk, c.graph_dot), (8, DEFAULT_PREFILL_CHUNK, None));
        assert_eq!(EngineConfig::from_vars(vars(&[("HEARTH_MAX_BATCH", "65")])).max_batch, 8);
    }
}
