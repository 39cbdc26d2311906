//! The real model shapes `hearth synth` writes (from the models' config.json).

use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Real configurations (from the models' config.json on Hugging Face).
pub fn preset(name: &str) -> Result<Value> {
    let llama3_rope = |factor: f64| json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    Ok(match name {
        "smollm2-135m" => json!({"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
            "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true, "max_position_embeddings": 8192}),
        "llama-3.2-1b" => json!({"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
            "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "rope_scaling": llama3_rope(32.0),
            "tie_word_embeddings": true, "max_position_embeddings": 131072}),
        "qwen3-4b" => json!({"model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
            "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "max_position_embeddings": 40960}),
        "llama-3.1-8b" => json!({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "rope_scaling": llama3_rope(8.0),
            "tie_word_embeddings": false, "max_position_embeddings": 131072}),
        "qwen3-30b-a3b" => json!({"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
            "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": false,
            "max_position_embeddings": 40960, "num_experts": 128, "num_experts_per_tok": 8,
            "moe_intermediate_size": 768, "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": true}),
        "gpt-oss-20b" => json!({"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
            "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
            "vocab_size": 201088, "rms_norm_eps": 1e-5, "rope_theta": 150000.0, "tie_word_embeddings": false,
            "max_position_embeddings": 131072, "attention_bias": true, "num_local_experts": 32,
            "num_experts_per_tok": 4, "sliding_window": 128, "swiglu_limit": 7.0,
            "layer_types": (0..24).map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>(),
            "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                             "original_max_position_embeddings": 4096, "truncate": false}}),
        // Qwen3-Next-80B-A3B's config.json.
        "qwen3-next-80b-a3b" => json!({"model_type": "qwen3_next", "hidden_size": 2048, "intermediate_size": 5120,
            "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
            "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
            "tie_word_embeddings": false, "max_position_embeddings": 262144, "full_attention_interval": 4,
            "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
            "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "num_experts": 512, "num_experts_per_tok": 10,
            "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "norm_topk_prob": true}),
        // Qwen3.5-35B-A3B's text model (40 layers, 3 Gated DeltaNet : 1 gated
        // attention, 256 experts top 8 plus a shared one), flat as mlx-lm reads it.
        "qwen3.5-35b-a3b" => json!({"model_type": "qwen3_5_moe", "hidden_size": 2048, "intermediate_size": 0,
            "num_hidden_layers": 40, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
            "vocab_size": 248320, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
            "max_position_embeddings": 262144, "full_attention_interval": 4,
            "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
            "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "num_experts": 256, "num_experts_per_tok": 8,
            "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                "mrope_section": [11, 11, 10]}}),
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown preset '{other}' (smollm2-135m, llama-3.2-1b, qwen3-4b, llama-3.1-8b, qwen3-30b-a3b, gpt-oss-20b, qwen3-next-80b-a3b, qwen3.5-35b-a3b)"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::preset;
    use crate::models::load::fit::{estimate, Device, Shape};

    #[test]
    fn hybrid_shapes_count_kv_only_on_attention_layers_and_the_state_with_its_snapshots() {
        let cfg = preset("qwen3-next-80b-a3b").unwrap();
        let s = Shape::from_config(&cfg, 80_000_000_000).unwrap();
        assert_eq!(s.kv_layers, Some(12));
        // 36 linear layers of 32 value heads x 128 x 128 floats, plus conv windows.
        let per_layer = 32 * 128 * 128 * 4 + 3 * (2 * 16 * 128 + 32 * 128) * 2;
        assert_eq!(s.state_bytes, 36 * per_layer);
        let need = estimate(&s, 4096, Device::Gpu, 128 << 30);
        assert_eq!(need.kv_cache, 2 * 12 * 2 * 256 * 4096 * 2);
        assert_eq!(need.state, s.state_bytes * (1 + crate::models::cache::MAX_SNAPSHOTS as u64));
    }
}
