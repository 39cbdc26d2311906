//! Gemma 4 against Python mlx-lm on tiny random models in MLX format: the
//! small models' shape (per-layer inputs, KV sharing across layers with
//! double-wide MLPs on the shared ones, wider full-attention heads with
//! proportional RoPE) and the large MoE shape (K = V on full layers, a routed
//! expert block beside the MLP), over prompts that cross the sliding window
//! and the first shared layer; greedy tokens across two turns; the multimodal
//! checkpoint layout; typed errors.

mod common;

use hearth::models::load::{self, Precision};
use hearth::models::QuantSpec;
use hearth::synth;
use mlx_rs::Dtype;
use serde_json::{json, Value};
use std::path::Path;

/// 6 layers (s, s, f, s, s, f), window 8; layers 4 and 5 share the K/V of
/// layers 3 and 2; per-layer inputs of width 32.
fn tiny_small() -> Value {
    json!({"model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 6, "intermediate_size": 64,
        "num_attention_heads": 4, "head_dim": 16, "global_head_dim": 32, "rms_norm_eps": 1e-6, "vocab_size": 257,
        "vocab_size_per_layer_input": 257, "num_key_value_heads": 2, "num_kv_shared_layers": 2,
        "hidden_size_per_layer_input": 32, "sliding_window": 8, "max_position_embeddings": 4096,
        "final_logit_softcapping": 30.0, "use_double_wide_mlp": true, "tie_word_embeddings": true,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                        "sliding_attention", "sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
            "sliding_attention": {"partial_rotary_factor": 1.0, "rope_theta": 10000.0, "rope_type": "default"}}})
}

/// The 26B-A4B shape in miniature: K = V with one KV head on full layers, 8
/// experts (top 2) beside the dense MLP, no sharing, no per-layer inputs.
fn tiny_moe() -> Value {
    let mut c = tiny_small();
    for (k, v) in [
        ("num_kv_shared_layers", json!(0)),
        ("hidden_size_per_layer_input", json!(0)),
        ("attention_k_eq_v", json!(true)),
        ("num_global_key_value_heads", json!(1)),
        ("enable_moe_block", json!(true)),
        ("num_experts", json!(8)),
        ("top_k_experts", json!(2)),
        ("moe_intermediate_size", json!(32)),
    ] {
        c[k] = v;
    }
    c
}

fn write(cfg: Value, dir: &Path, bits: i32) {
    synth::write_quantized(cfg, dir, (bits > 0).then(|| QuantSpec::affine(32, bits)), Dtype::Float32).unwrap();
}

#[test]
fn gemma4_small_shape_matches_mlx_lm() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for bits in [0, 4] {
        let dir = t.path().join(format!("small-{bits}"));
        write(tiny_small(), &dir, bits);
        common::assert_logits_match(&format!("gemma4 small {bits}-bit"), &dir, &common::tiny_prompt(40));
        common::assert_logits_match(&format!("gemma4 small {bits}-bit short"), &dir, &common::tiny_prompt(5));
    }
    common::assert_greedy_matches_mlx_lm_across_two_turns("gemma4 small 4-bit", &t.path().join("small-4"));
    common::assert_tiny_batch_in("gemma4 small 4-bit", &t.path().join("small-4"));
}

#[test]
fn gemma4_moe_shape_matches_mlx_lm() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for bits in [0, 4] {
        let dir = t.path().join(format!("moe-{bits}"));
        write(tiny_moe(), &dir, bits);
        common::assert_logits_match(&format!("gemma4 moe {bits}-bit"), &dir, &common::tiny_prompt(40));
        common::assert_tiny_batch_in(&format!("gemma4 moe {bits}-bit"), &dir);
    }
}

/// A `gemma4` checkpoint: the text config nested, tensors under
/// `language_model.`, a vision tower beside it (skipped).
#[test]
fn gemma4_multimodal_layout_loads_the_text_model() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("mm");
    write(tiny_small(), &dir, 0);
    common::edit_config(&dir, |c| {
        let text = c.clone();
        *c = json!({"model_type": "gemma4", "text_config": text, "vocab_size": 257, "vision_config": {"hidden_size": 8}});
    });
    common::edit_tensors(&dir, |t| {
        let keys: Vec<String> = t.keys().cloned().collect();
        for k in keys {
            let v = t.remove(&k).unwrap();
            t.insert(format!("language_model.{k}"), v);
        }
        t.insert("vision_tower.patch.weight".into(), mlx_rs::ops::ones::<f32>(&[2, 2]).unwrap());
    });
    common::assert_logits_match("gemma4 multimodal", &dir, &common::tiny_prompt(20));
}

#[test]
fn broken_gemma4_configs_are_typed_errors() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("m");
    write(tiny_small(), &dir, 0);
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let err = |f: &dyn Fn(&mut Value)| {
        let mut c = cfg.clone();
        f(&mut c);
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        match load::load(&dir, Precision::Native) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    };
    let e = err(&|c| c["layer_types"] = json!(["sliding_attention", "full_attention"]));
    assert!(e.contains("layer_types has 2 entries for 6 layers"), "{e}");
    let e = err(&|c| c["num_kv_shared_layers"] = json!(6));
    assert!(e.contains("num_kv_shared_layers"), "{e}");
    // The shared full layer has no earlier full layer to share with.
    let e = err(&|c| {
        c["layer_types"] = json!(["sliding_attention", "sliding_attention", "sliding_attention",
                                  "sliding_attention", "sliding_attention", "full_attention"])
    });
    assert!(e.contains("layer 5 (full_attention) shares K/V"), "{e}");
}
