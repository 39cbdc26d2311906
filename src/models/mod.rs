//! Model architectures and their building blocks: `arch/` one file per family
//! (config, attention, MLP, block, model, as mlx-lm keeps them), `nn/` the
//! layers they share, `cache/` what they keep between passes, `kernels/` the
//! fused kernels behind one dispatch entry per op, `load/` from a path to a
//! built model, `registry` the one entry per architecture.
//!
//! Weights use Hugging Face names verbatim (`model.layers.0.self_attn.q_proj.weight`),
//! so mlx-community checkpoints map with no glue and GGUF names are renamed once
//! at load (`formats::gguf`). Quantized layers hold MLX's packed weights and
//! scales (plus biases in affine mode; `nn::quant`). Each model says which caches it needs (`new_cache`).

pub mod arch;
pub mod cache;
pub mod kernels;
pub mod load;
pub(crate) mod mlx_c;
pub mod nn;
pub mod registry;

use crate::error::{Error, Result};
use cache::Cache;
use mlx_rs::Array;

pub use nn::layers::{Embedding, Linear, RmsNorm};
pub use nn::quant::{QuantMode, QuantSpec};
pub use load::weights::Weights;

/// Tokens per prefill step: bounds peak memory on long prompts (mlx-lm uses 2048 too).
/// `HEARTH_PREFILL_CHUNK` overrides it, for tuning. The fit estimate counts one
/// chunk of working buffers.
pub fn prefill_chunk() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("HEARTH_PREFILL_CHUNK").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2048)
    })
}

/// What the engine needs from an architecture.
pub trait LanguageModel: Send {
    /// Runs `tokens` (shape [1, L], int32) through the model, appending to `cache`.
    /// Returns logits for the last position only ([1, vocab]) unless `all_logits`,
    /// then [1, L, vocab]. Computing the output head for one row instead of L is
    /// what makes long prefills cheap.
    fn forward(&self, tokens: &Array, cache: &mut [Cache], all_logits: bool) -> Result<Array>;
    /// Runs several sequences at once: `tokens` is [B, L] (int32), `rows[b]`
    /// the caches of row b (each from `new_cache`), appended to. Returns each
    /// row's logits at its last position, [B, vocab]. Every row keeps its own
    /// caches, so sequences join and leave a batch between calls (continuous
    /// batching) and a row computes what it computes alone.
    ///
    /// Families that batch (`batched`) run their projections, MLPs and head
    /// once for all rows; the others run here one row after another, which
    /// serves the same requests, only without sharing the weight reads.
    fn forward_rows(&self, tokens: &Array, rows: &mut [&mut [Cache]]) -> Result<Array> {
        use mlx_rs::ops::indexing::IndexOp;
        let b = tokens.shape()[0];
        if rows.len() != b as usize {
            return Err(cfg_err(format!("{b} rows of tokens for {} caches", rows.len())));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (r, caches) in rows.iter_mut().enumerate() {
            let r = r as i32;
            out.push(self.forward(&tokens.index(r..r + 1), caches, false)?);
        }
        Ok(if out.len() == 1 { out.pop().expect("one row") } else { mlx_rs::ops::concatenate(&out, 0)? })
    }
    /// Whether `forward_rows` shares one pass between its rows.
    fn batched(&self) -> bool {
        false
    }
    /// Whether `forward_rows` also takes merged caches (every layer's
    /// `KvCache::merge` of several rows' caches as one entry of `rows`), so
    /// attention runs once for all rows: true where every layer keeps a
    /// full KV cache and attention needs nothing per row but its position.
    fn merges_caches(&self) -> bool {
        false
    }
    /// One fresh cache per layer, of the kind the layer needs.
    fn new_cache(&self) -> Vec<Cache>;
    fn info(&self) -> ArchInfo;
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchInfo {
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub max_position_embeddings: usize,
}

impl ArchInfo {
    pub fn new(architecture: &str, vocab: i32, hidden: i32, layers: i32, context: i32) -> Self {
        ArchInfo {
            architecture: architecture.to_string(),
            vocab_size: vocab.max(0) as usize,
            hidden_size: hidden.max(0) as usize,
            num_layers: layers.max(0) as usize,
            max_position_embeddings: context.max(0) as usize,
        }
    }
}

/// The language model's part of a config.json: multimodal checkpoints nest
/// it under `text_config`.
pub fn text_config(config: &serde_json::Value) -> &serde_json::Value {
    if config["text_config"].is_object() {
        &config["text_config"]
    } else {
        config
    }
}

pub(crate) fn cfg_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// A decoder's sizes from config.json, checked before any arithmetic or
/// allocation uses them: a hostile or broken config is a clear error, never a
/// division by zero or a terabyte allocation.
pub(crate) struct Sizes {
    pub hidden: i32,
    pub intermediate: i32,
    pub layers: i32,
    pub heads: i32,
    pub kv_heads: i32,
    /// Explicit `head_dim`; None means hidden / heads.
    pub head_dim: Option<i32>,
    pub vocab: i32,
}

impl Sizes {
    pub fn check(&self) -> Result<()> {
        let within = |name: &str, v: i32, max: i32| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(cfg_err(format!("{name} is {v}; it must be between 1 and {max}")))
            }
        };
        within("hidden_size", self.hidden, 1 << 17)?;
        within("intermediate_size", self.intermediate, 1 << 20)?;
        within("num_hidden_layers", self.layers, 1024)?;
        within("num_attention_heads", self.heads, 1024)?;
        within("num_key_value_heads", self.kv_heads, self.heads)?;
        within("vocab_size", self.vocab, 1 << 22)?;
        if self.heads % self.kv_heads != 0 {
            return Err(cfg_err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.heads, self.kv_heads
            )));
        }
        match self.head_dim {
            Some(d) => within("head_dim", d, 1024),
            None if self.hidden % self.heads != 0 => Err(cfg_err(format!(
                "hidden_size ({}) is not divisible by num_attention_heads ({})",
                self.hidden, self.heads
            ))),
            None => Ok(()),
        }
    }
}
