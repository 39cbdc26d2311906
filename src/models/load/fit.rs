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
    /// Mixture-of-experts models: the parameters one token runs through (the
    /// speed figure), while `params` counts every expert (the memory figure).
    #[serde(default)]
    pub active: Option<u64>,
    /// Hybrid models: how many layers keep a KV cache (the others keep a
    /// fixed-size recurrent state). None: all of them.
    #[serde(default)]
    pub kv_layers: Option<u64>,
    /// Hybrid models: bytes of recurrent state (conv windows and float32
    /// delta-rule states) over all linear layers, for one conversation.
    #[serde(default)]
    pub state_bytes: u64,
}

impl Shape {
    /// From a Hugging Face / MLX config.json; `params` from the headers.
    pub fn from_config(cfg: &serde_json::Value, params: u64) -> Option<Shape> {
        let c = crate::models::text_config(cfg);
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
            active: active_params(c, hidden, params),
            // Hybrids cache K/V on their attention layers only; Gemma 4's
            // KV-shared layers keep none.
            kv_layers: hybrid_layers(c).map(|(attn, _)| attn).or_else(|| {
                let shared = c["num_kv_shared_layers"].as_u64().filter(|&s| s > 0)?;
                Some(get("num_hidden_layers")?.saturating_sub(shared))
            }),
            state_bytes: hybrid_layers(c).map_or(0, |(_, linear)| linear * linear_state_bytes(c)),
        })
    }

    /// "30.5B total, 3.0B active" for mixture-of-experts models, "8.2B" otherwise.
    pub fn params_label(&self) -> String {
        let b = |n: u64| if n >= 1_000_000_000 { format!("{:.1}B", n as f64 / 1e9) } else { format!("{:.0}M", n as f64 / 1e6) };
        match self.active {
            Some(a) => format!("{} total, {} active", b(self.params), b(a)),
            None => b(self.params),
        }
    }
}

/// Parameters a token runs through in an MoE model: all of them, less the
/// experts it is not routed to in each sparse layer (Qwen3-MoE's config keys,
/// or gpt-oss's: `num_local_experts` of `intermediate_size` on every layer),
/// less the embedding table when the head has its own (a token reads one row
/// of it). For gpt-oss-20b that is OpenAI's 3.6B.
fn active_params(c: &serde_json::Value, hidden: u64, params: u64) -> Option<u64> {
    let experts = c["num_experts"].as_u64().or_else(|| c["num_local_experts"].as_u64()).filter(|&e| e > 1)?;
    let k = c["num_experts_per_tok"].as_u64()?.min(experts);
    let inter = c["moe_intermediate_size"].as_u64().or_else(|| c["num_local_experts"].as_u64().and(c["intermediate_size"].as_u64()))?;
    let layers = c["num_hidden_layers"].as_u64()?;
    let step = c["decoder_sparse_step"].as_u64().unwrap_or(1).max(1);
    let dense: Vec<u64> = c["mlp_only_layers"].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).collect()).unwrap_or_default();
    let sparse = (0..layers).filter(|i| !dense.contains(i) && (i + 1) % step == 0).count() as u64;
    let tied = c["tie_word_embeddings"].as_bool().unwrap_or(false);
    let embedding = if tied { 0 } else { c["vocab_size"].as_u64().unwrap_or(0) * hidden };
    Some(params.saturating_sub(sparse * 3 * hidden * inter * (experts - k)).saturating_sub(embedding))
}

/// (attention layers, linear layers) of a Gated DeltaNet hybrid (Qwen3-Next,
/// Qwen3.5): every `full_attention_interval`-th layer is attention.
fn hybrid_layers(c: &serde_json::Value) -> Option<(u64, u64)> {
    c["linear_num_value_heads"].as_u64()?;
    let layers = c["num_hidden_layers"].as_u64()?;
    let every = c["full_attention_interval"].as_u64().unwrap_or(4).max(1);
    let attn = layers / every;
    Some((attn, layers - attn))
}

/// One linear layer's state: the float32 delta-rule matrix per value head
/// plus the conv window (K - 1 positions of q, k and v, 16-bit).
fn linear_state_bytes(c: &serde_json::Value) -> u64 {
    let g = |k: &str| c[k].as_u64().unwrap_or(0);
    let (nk, nv, dk, dv) = (g("linear_num_key_heads"), g("linear_num_value_heads"), g("linear_key_head_dim"), g("linear_value_head_dim"));
    let conv = (g("linear_conv_kernel_dim").max(1) - 1) * (2 * nk * dk + nv * dv);
    nv * dv * dk * 4 + conv * 2
}

pub use crate::sys::Device;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Need {
    pub weights: u64,
    pub kv_cache: u64,
    pub working: u64,
    /// Hybrid models: the recurrent state and its snapshots
    /// (`cache::MAX_SNAPSHOTS` per conversation).
    pub state: u64,
}

impl Need {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.working + self.state
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
    estimate_with_kv(s, context, device, total_memory, 0)
}

/// `estimate` with the KV cache stored in `kv_bits` (8 or 4: packed values
/// plus a scale and bias per group of 64 in the cache's dtype; 0: the dtype).
pub fn estimate_with_kv(s: &Shape, context: u64, device: Device, total_memory: u64, kv_bits: u8) -> Need {
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
    let values = 2 * s.kv_layers.unwrap_or(s.layers) * s.kv_heads * s.head_dim * ctx;
    let kv_cache = match kv_bits {
        4 | 8 => values * kv_bits as u64 / 8 + values / 64 * 2 * elem,
        _ => values * elem,
    };
    // The live state plus the snapshots kept for prompt-cache reuse.
    let state = s.state_bytes * (1 + crate::models::cache::MAX_SNAPSHOTS as u64);
    // One prefill chunk in flight: residual stream and q/k/v/o, the MLP's three
    // intermediate buffers, logits; on CPU also the attention scores over the
    // whole context (GPUs run a fused attention kernel that never stores them).
    let t = ctx.min(crate::models::DEFAULT_PREFILL_CHUNK as u64);
    let per_token = 6 * s.hidden + 3 * s.intermediate + s.heads * s.head_dim * 2;
    let scores = if device == Device::Cpu { s.heads * t * ctx } else { 0 };
    let working = (t * per_token + scores + s.vocab) * elem;
    Need { weights, kv_cache, working, state }
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
            active: None,
            kv_layers: None,
            state_bytes: 0,
        };
        let gib = 1u64 << 30;
        let need = estimate(&llama8b, 8192, Device::Gpu, 16 * gib);
        // 4.5 bits a weight and 1 GiB of 16-bit KV cache at 8k context.
        assert!((4_400_000_000..4_600_000_000).contains(&need.weights), "{need:?}");
        assert_eq!(need.kv_cache, 2 * 32 * 8 * 128 * 8192 * 2);
        // 8-bit: 1 byte a value and 4 bytes of scale and bias per 64; 4-bit: half a byte.
        let values = 2 * 32 * 8 * 128 * 8192;
        assert_eq!(estimate_with_kv(&llama8b, 8192, Device::Gpu, 64 << 30, 8).kv_cache, values + values / 16);
        assert_eq!(estimate_with_kv(&llama8b, 8192, Device::Gpu, 64 << 30, 4).kv_cache, values / 2 + values / 16);
        assert_eq!(verdict(need.total(), 16 * gib), Verdict::Fits);
        assert_eq!(verdict(need.total(), 8 * gib), Verdict::Tight);
        assert_eq!(verdict(need.total(), 4 * gib), Verdict::WontFit);
        // On a CPU with room, f32 weights: four bytes a parameter.
        assert_eq!(estimate(&llama8b, 8192, Device::Cpu, 128 * gib).weights, 8_030_000_000 * 4);
    }
}

#[cfg(test)]
mod moe_tests {
    use super::*;

    #[test]
    fn moe_shapes_count_every_expert_for_memory_and_the_routed_ones_for_speed() {
        // Qwen3-30B-A3B's config.json.
        let cfg = serde_json::json!({"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
            "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "quantization": {"bits": 4, "group_size": 64}});
        let s = Shape::from_config(&cfg, 30_532_000_000).unwrap();
        let active = s.active.unwrap();
        assert!((3_000_000_000..3_500_000_000).contains(&active), "{active}");
        assert_eq!(s.params_label(), format!("30.5B total, {:.1}B active", active as f64 / 1e9));
        // gpt-oss-20b: 32 experts of 2880 on each of 24 layers, 4 per token.
        let c = serde_json::json!({"num_hidden_layers": 24, "hidden_size": 2880, "intermediate_size": 2880,
            "num_local_experts": 32, "num_experts_per_tok": 4, "vocab_size": 201088, "tie_word_embeddings": false});
        let active = active_params(&c, 2880, 20_910_000_000).unwrap();
        assert!((3_550_000_000..3_650_000_000).contains(&active), "{active}");
        // Memory counts all 30.5B weights: ~17 GB at 4.5 bits.
        let need = estimate(&s, 4096, Device::Gpu, 64 << 30);
        assert!((16_000_000_000..18_000_000_000).contains(&need.weights), "{need:?}");
        assert_eq!(need.state, 0);
    }
}
