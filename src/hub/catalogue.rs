//! A curated list of good mlx-community 4-bit chat models, small to large. The
//! shapes are the models' own config.json numbers, so the fit estimate works
//! before anything is fetched; sizes are the 4-bit download, approximately.

use crate::models::load::fit::Shape;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: &'static str,
    pub family: &'static str,
    /// `model_type` in config.json: decides whether this Hearth can run it.
    pub model_type: &'static str,
    pub blurb: &'static str,
    pub shape: Shape,
}

impl Entry {
    /// Approximate download size: 4.5 bits a weight (4-bit, group 64, 16-bit scales/biases).
    pub fn download_bytes(&self) -> u64 {
        self.shape.params * 9 / 16
    }

    pub fn supported(&self) -> bool {
        crate::models::registry::check_supported(self.model_type).is_ok()
    }
}

#[allow(clippy::too_many_arguments)]
const fn e(
    id: &'static str,
    family: &'static str,
    model_type: &'static str,
    blurb: &'static str,
    params: u64,
    layers: u64,
    hidden: u64,
    intermediate: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    vocab: u64,
) -> Entry {
    Entry {
        id,
        family,
        model_type,
        blurb,
        shape: Shape { params, layers, hidden, intermediate, heads, kv_heads, head_dim, vocab, bits: Some(4), active: None, kv_layers: None, state_bytes: 0 },
    }
}

/// A mixture-of-experts entry: `active` parameters per token of `params`;
/// `intermediate` is the routed experts' width (experts per token × expert width).
#[allow(clippy::too_many_arguments)]
const fn moe(
    id: &'static str,
    family: &'static str,
    model_type: &'static str,
    blurb: &'static str,
    params: u64,
    active: u64,
    layers: u64,
    hidden: u64,
    intermediate: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    vocab: u64,
) -> Entry {
    let mut entry = e(id, family, model_type, blurb, params, layers, hidden, intermediate, heads, kv_heads, head_dim, vocab);
    entry.shape.active = Some(active);
    entry
}

/// A Gated DeltaNet hybrid MoE entry (Qwen3-Next, Qwen3.5-MoE): one layer in
/// four keeps a KV cache, the others `state` bytes of recurrent state in all.
#[allow(clippy::too_many_arguments)]
const fn hybrid(
    id: &'static str,
    family: &'static str,
    model_type: &'static str,
    blurb: &'static str,
    params: u64,
    active: u64,
    layers: u64,
    hidden: u64,
    intermediate: u64,
    vocab: u64,
    state: u64,
) -> Entry {
    // 16 query heads, 2 KV heads of 256 on every 4th layer, in both families.
    let mut entry = moe(id, family, model_type, blurb, params, active, layers, hidden, intermediate, 16, 2, 256, vocab);
    entry.shape.kv_layers = Some(layers / 4);
    entry.shape.state_bytes = state;
    entry
}

/// Gemma 4 E4B (text): 42 layers, of which the last 18 reuse earlier layers'
/// K/V (24 keep caches; 20 of them are 512-token sliding windows, counted
/// here as full, which errs on the safe side); its per-layer embedding table
/// (2.8B) is a lookup, so 4.6B of the 7.5B run per token.
const fn gemma4_e4b() -> Entry {
    let mut entry = e("mlx-community/gemma-4-E4B-it-4bit", "Gemma 4", "gemma4", "Google's 2026 small model; per-layer embeddings; 16 GB Macs", 7_463_000_000, 42, 2560, 10240, 8, 2, 256, 262144);
    entry.shape.active = Some(4_644_000_000);
    entry.shape.kv_layers = Some(24);
    entry
}

/// LFM2-1.2B: 16 layers, attention on 6 of them, gated short convolutions
/// (a 2-position window each) on the rest.
const fn lfm2_1_2b() -> Entry {
    let mut entry = e("mlx-community/LFM2-1.2B-4bit", "LFM2", "lfm2", "Liquid AI's fast hybrid for small Macs", 1_170_000_000, 16, 2048, 8192, 32, 8, 64, 65536);
    entry.shape.kv_layers = Some(6);
    entry.shape.state_bytes = 10 * 2 * 2048 * 2;
    entry
}

/// One Gated DeltaNet layer's state in both families: 32 value heads of
/// 128 x 128 floats, plus a 3-position conv window over q, k, v (16-bit).
const DELTA_LAYER_STATE: u64 = 32 * 128 * 128 * 4 + 3 * (2 * 16 * 128 + 32 * 128) * 2;

pub const CATALOGUE: &[Entry] = &[
    e("mlx-community/SmolLM2-360M-Instruct-4bit", "SmolLM2", "llama", "Tiny and quick; simple questions", 362_000_000, 32, 960, 2560, 15, 5, 64, 49152),
    e("mlx-community/Qwen2.5-0.5B-Instruct-4bit", "Qwen2.5", "qwen2", "Smallest Qwen; fast drafts", 494_000_000, 24, 896, 4864, 14, 2, 64, 151936),
    e("mlx-community/Qwen3-0.6B-4bit", "Qwen3", "qwen3", "Small thinking model", 596_000_000, 28, 1024, 3072, 16, 8, 128, 151936),
    e("mlx-community/gemma-3-1b-it-4bit", "Gemma 3", "gemma3_text", "Google's small chat model", 1_000_000_000, 26, 1152, 6912, 4, 1, 256, 262144),
    lfm2_1_2b(),
    e("mlx-community/Llama-3.2-1B-Instruct-4bit", "Llama 3.2", "llama", "Meta's small chat model", 1_236_000_000, 16, 2048, 8192, 32, 8, 64, 128256),
    e("mlx-community/Qwen2.5-1.5B-Instruct-4bit", "Qwen2.5", "qwen2", "Good all-rounder for its size", 1_544_000_000, 28, 1536, 8960, 12, 2, 128, 151936),
    e("mlx-community/SmolLM2-1.7B-Instruct-4bit", "SmolLM2", "llama", "Largest SmolLM2", 1_711_000_000, 24, 2048, 8192, 32, 32, 64, 49152),
    e("mlx-community/Qwen3-1.7B-4bit", "Qwen3", "qwen3", "Thinking model, laptop-friendly", 1_720_000_000, 28, 2048, 6144, 16, 8, 128, 151936),
    e("mlx-community/SmolLM3-3B-4bit", "SmolLM3", "smollm3", "Hugging Face's open 3B with thinking on/off", 3_075_000_000, 36, 2048, 11008, 16, 4, 128, 128256),
    e("mlx-community/Llama-3.2-3B-Instruct-4bit", "Llama 3.2", "llama", "Solid everyday assistant", 3_213_000_000, 28, 3072, 8192, 24, 8, 128, 128256),
    e("mlx-community/Ministral-3-3B-Instruct-2512-4bit", "Ministral 3", "mistral3", "Mistral's small 2025 model, 256k context", 3_430_000_000, 26, 3072, 9216, 32, 8, 128, 131072),
    e("mlx-community/Phi-3.5-mini-instruct-4bit", "Phi-3.5", "phi3", "Strong reasoning for 3.8B", 3_821_000_000, 32, 3072, 8192, 32, 32, 96, 32064),
    e("mlx-community/Qwen3-4B-4bit", "Qwen3", "qwen3", "Best quality under 8 GB", 4_022_000_000, 36, 2560, 9728, 32, 8, 128, 151936),
    e("mlx-community/Mistral-7B-Instruct-v0.3-4bit", "Mistral", "mistral", "Classic 7B instruct", 7_248_000_000, 32, 4096, 14336, 32, 8, 128, 32768),
    gemma4_e4b(),
    e("mlx-community/Qwen2.5-7B-Instruct-4bit", "Qwen2.5", "qwen2", "Strong 7B generalist", 7_616_000_000, 28, 3584, 18944, 28, 4, 128, 152064),
    e("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit", "Llama 3.1", "llama", "Meta's 8B, long context", 8_030_000_000, 32, 4096, 14336, 32, 8, 128, 128256),
    e("mlx-community/Qwen3-8B-4bit", "Qwen3", "qwen3", "Best quality here; 16 GB Macs", 8_190_000_000, 36, 4096, 12288, 32, 8, 128, 151936),
    moe("mlx-community/gpt-oss-20b-MXFP4-Q8", "gpt-oss", "gpt_oss", "OpenAI's open reasoning model (low/medium/high effort); 16 GB Macs", 20_910_000_000, 3_609_000_000, 24, 2880, 11520, 64, 8, 64, 201088),
    moe("mlx-community/Qwen3-Coder-30B-A3B-Instruct-4bit", "Qwen3-Coder", "qwen3_moe", "Coding agent model; decodes like a 3B; 32 GB Macs", 30_532_000_000, 3_042_000_000, 48, 2048, 6144, 32, 4, 128, 151936),
    moe("mlx-community/Qwen3-30B-A3B-Instruct-2507-4bit", "Qwen3", "qwen3_moe", "Mixture of experts: 30B quality at 3B speed; 32 GB Macs", 30_532_000_000, 3_042_000_000, 48, 2048, 6144, 32, 4, 128, 151936),
    hybrid("mlx-community/Qwen3.5-35B-A3B-4bit", "Qwen3.5", "qwen3_5_moe", "2026's Qwen: linear attention + experts, long chats stay fast; 32 GB Macs", 34_661_000_000, 2_946_000_000, 40, 2048, 4096, 248320, 30 * DELTA_LAYER_STATE),
    hybrid("mlx-community/Qwen3-Next-80B-A3B-Instruct-4bit", "Qwen3-Next", "qwen3_next", "80B of experts at 3B speed, 256k context; 64 GB Macs", 79_674_000_000, 3_564_000_000, 48, 2048, 5120, 151936, 36 * DELTA_LAYER_STATE),
    moe("mlx-community/gpt-oss-120b-MXFP4-Q8", "gpt-oss", "gpt_oss", "OpenAI's large open reasoning model; 96 GB+ Macs", 116_830_000_000, 5_178_000_000, 36, 2880, 11520, 64, 8, 64, 201088),
    moe("mlx-community/Qwen3-235B-A22B-Instruct-2507-4bit", "Qwen3", "qwen3_moe", "Frontier-class; 192 GB Macs", 235_094_000_000, 21_568_000_000, 94, 4096, 12288, 64, 4, 128, 151936),
];

#[cfg(test)]
mod tests {
    #[test]
    fn catalogue_ids_are_valid_and_sorted_by_size() {
        let mut last = 0;
        for e in super::CATALOGUE {
            crate::library::ids::check_repo_id(e.id).unwrap();
            assert!(crate::models::registry::check_supported(e.model_type).is_ok(), "{} cannot run here", e.id);
            assert!(e.shape.params >= last, "{} out of order", e.id);
            last = e.shape.params;
        }
    }
}
