//! "Will it fit": memory a model needs (weights + KV cache at the chosen
//! context + working buffers) against the machine's memory, before download
//! and before load.

use serde::{Deserialize, Serialize};

/// The numbers the estimate needs, from config.json or the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub params: u64,
    pub layers: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab: u64,
    /// Bits per weight on disk when quantized (4, 8), None for float checkpoints.
    pub bits: Option<u32>,
}

impl Shape {
    /// From a Hugging Face / MLX config.json; `params` from the headers.
    pub fn from_config(cfg: &serde_json::Value, params: u64) -> Option<Shape> {
        // Multimodal configs keep the language model under text_config.
        let c = if cfg["text_config"].is_object() { &cfg["text_config"] } else { cfg };
        let get = |k: &str| c[k].as_u64();
        let hidden = get("hidden_size")?;
        let heads = get("num_attention_heads")?;
        let q = if cfg["quantization"].is_object() { &cfg["quantization"] } else { &cfg["quantization_config"] };
        Some(Shape {
            params,
            layers: get("num_hidden_layers")?,
            hidden,
            intermediate: get("intermediate_size").unwrap_or(4 * hidden),
            heads,
            kv_heads: get("num_key_value_heads").unwrap_or(heads),
            head_dim: get("head_dim").unwrap_or(hidden / heads.max(1)),
            vocab: get("vocab_size").unwrap_or(32000),
            bits: q["bits"].as_u64().map(|b| b as u32),
        })
    }
}

pub use crate::sys::Device;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Need {
    pub weights: u64,
    pub kv_cache: u64,
    pub working: u64,
}

impl Need {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.working
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fits,
    Tight,
    WontFit,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Fits => "fits",
            Verdict::Tight => "tight",
            Verdict::WontFit => "won't fit",
        }
    }
}

/// Bytes of quantized weights: packed bits plus a 16-bit scale and bias per group of 64.
fn quantized_bytes(params: u64, bits: u32) -> u64 {
    params * (bits as u64 * 64 + 32) / (8 * 64)
}

pub fn estimate(s: &Shape, context: u64, device: Device, total_memory: u64) -> Need {
    let f32_weights = s.params * 4;
    let (weights, elem) = match device {
        Device::Gpu => (s.bits.map(|b| quantized_bytes(s.params, b)).unwrap_or(s.params * 2), 2),
        Device::Cpu if f32_weights > total_memory / 2 => {
            (s.bits.map(|b| quantized_bytes(s.params, b)).unwrap_or(s.params * 2), 4)
        }
        Device::Cpu => (f32_weights, 4),
    };
    // The cache grows in steps of 256 tokens, so round up.
    let ctx = context.div_ceil(256) * 256;
    let kv_cache = 2 * s.layers * s.kv_heads * s.head_dim * ctx * elem;
    // One prefill chunk in flight: residual stream and q/k/v/o, the MLP's three
    // intermediate buffers, logits; on CPU also the attention scores over the
    // whole context (GPUs run a fused attention kernel that never stores them).
    let t = ctx.min(super::prefill_chunk() as u64);
    let per_token = 6 * s.hidden + 3 * s.intermediate + s.heads * s.head_dim * 2;
    let scores = if device == Device::Cpu { s.heads * t * ctx } else { 0 };
    let working = (t * per_token + scores + s.vocab) * elem;
    Need { weights, kv_cache, working }
}

/// Fits under 60 % of memory; tight up to 80 % (the OS, the app and, on a Mac,
/// the GPU wired-memory limit of ~75 % need the rest); beyond that it won't fit.
pub fn verdict(need: u64, total_memory: u64) -> Verdict {
    let m = total_memory as f64;
    match need as f64 {
        n if n <= 0.6 * m => Verdict::Fits,
        n if n <= 0.8 * m => Verdict::Tight,
        _ => Verdict::WontFit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_memory() {
        let llama8b = Shape {
            params: 8_030_000_000,
            layers: 32,
            hidden: 4096,
            intermediate: 14336,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            vocab: 128256,
            bits: Some(4),
        };
        let gib = 1u64 << 30;
        let need = estimate(&llama8b, 8192, Device::Gpu, 16 * gib);
        // 4.5 bits a weight and 1 GiB of 16-bit KV cache at 8k context.
        assert!((4_400_000_000..4_600_000_000).contains(&need.weights), "{need:?}");
        assert_eq!(need.kv_cache, 2 * 32 * 8 * 128 * 8192 * 2);
        assert_eq!(verdict(need.total(), 16 * gib), Verdict::Fits);
        assert_eq!(verdict(need.total(), 8 * gib), Verdict::Tight);
        assert_eq!(verdict(need.total(), 4 * gib), Verdict::WontFit);
        // On a CPU with room, f32 weights: four bytes a parameter.
        assert_eq!(estimate(&llama8b, 8192, Device::Cpu, 128 * gib).weights, 8_030_000_000 * 4);
    }
}
