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
pub mod forward;
pub mod kernels;
pub mod load;
pub(crate) mod mlx_c;
pub mod nn;
pub mod registry;

use crate::error::{Error, Result};
use cache::Cache;
pub use forward::{ForwardCtx, Head, Input, Output};
use mlx_rs::Array;

pub use nn::layers::{Embedding, Linear, RmsNorm};
pub use nn::quant::{QuantMode, QuantSpec};
pub use load::weights::Weights;

/// Tokens per prefill pass unless the engine's config says otherwise
/// (`engine::EngineConfig::prefill_chunk`): bounds peak memory on long
/// prompts (mlx-lm uses 2048 too). The fit estimate counts one such chunk.
pub const DEFAULT_PREFILL_CHUNK: usize = 2048;

/// What the engine needs from an architecture.
pub trait LanguageModel: Send {
    /// One pass over `input` ([B, L] rows of tokens, or embeddings in their
    /// place), appending to each row's caches in `ctx`, returning what
    /// `ctx.head` asks for (`forward`'s module comment).
    ///
    /// Families that batch (`batched`) run their projections, MLPs and head
    /// once for all rows; the others run the rows one after another
    /// (`ForwardCtx::each_row`), which serves the same requests, only
    /// without sharing the weight reads.
    fn forward(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output>;
    /// The token embedding lookup alone, [B, L] ids to [B, L, hidden]:
    /// what image features are spliced into before a pass with
    /// `Input::with_embeddings` (mlx-vlm's `get_input_embeddings`).
    fn embed_tokens(&self, tokens: &Array) -> Result<Array>;
    /// Whether `forward` shares one pass between its rows.
    fn batched(&self) -> bool {
        false
    }
    /// Whether `forward` also takes merged caches (every layer's
    /// `KvCache::merge` of several rows' caches as one entry of `ctx.rows`),
    /// so attention runs once for all rows: true where every layer keeps a
    /// full KV cache and attention needs nothing per row but its position.
    fn merges_caches(&self) -> bool {
        false
    }
    /// One fresh cache per layer, of the kind the layer needs.
    fn new_cache(&self) -> Vec<Cache>;
    fn info(&self) -> ArchInfo;

    /// One sequence's logits: `tokens` [1, L] through `cache`, as `head` asks.
    fn logits(&self, tokens: &Array, cache: &mut [Cache], head: Head) -> Result<Array> {
        self.forward(Input::tokens(tokens), &mut ForwardCtx::new(&mut [cache], head))?.logits()
    }
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
