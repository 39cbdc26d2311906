//! The hybrid linear-attention families (Qwen3-Next, Qwen3.5 dense and MoE)
//! against Python mlx-lm on tiny random models in MLX format: logits over a
//! prompt that spans several chunks of the chunked delta rule, greedy tokens
//! on two turns where the second resumes from a state snapshot, the
//! multimodal nesting of Qwen3.5 checkpoints, and the typed errors of broken
//! configs and tensors.

mod common;

use hearth::models::load::{self, Precision};
use hearth::models::QuantSpec;
use hearth::synth;
use mlx_rs::Dtype;
use serde_json::{json, Value};
use std::path::Path;

/// 8 layers, every 4th full attention: 6 Gated DeltaNet layers, 2 attention.
fn linear_dims(c: &mut Value) {
    for (k, v) in [
        ("linear_num_key_heads", 2),
        ("linear_num_value_heads", 4),
        ("linear_key_head_dim", 32),
        ("linear_value_head_dim", 16),
        ("linear_conv_kernel_dim", 4),
        ("full_attention_interval", 4),
    ] {
        c[k] = json!(v);
    }
}

fn tiny_qwen3_next() -> Value {
    let mut c = json!({"model_type": "qwen3_next", "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 257, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
        "tie_word_embeddings": false, "max_position_embeddings": 4096,
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64, "decoder_sparse_step": 1, "mlp_only_layers": [1],
        "norm_topk_prob": true});
    linear_dims(&mut c);
    c
}

fn tiny_qwen3_5(moe: bool) -> Value {
    let mut c = json!({"model_type": if moe { "qwen3_5_moe" } else { "qwen3_5" }, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 257, "rms_norm_eps": 1e-6, "tie_word_embeddings": !moe,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0, "partial_rotary_factor": 0.25,
                            "mrope_section": [11, 11, 10]}});
    linear_dims(&mut c);
    if moe {
        for (k, v) in [("num_experts", 8), ("num_experts_per_tok", 2), ("moe_intermediate_size", 32), ("shared_expert_intermediate_size", 64)] {
            c[k] = json!(v);
        }
    }
    c
}

fn write(cfg: Value, dir: &Path, bits: i32) {
    synth::write_quantized(cfg, dir, (bits > 0).then(|| QuantSpec::affine(32, bits)), Dtype::Float32).unwrap();
}

/// 150 tokens: three chunks of the chunked delta rule (64 each), the last ragged.
fn long_prompt() -> Vec<u32> {
    common::tiny_prompt(150)
}

#[test]
fn qwen3_next_logits_match_mlx_lm() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for bits in [0, 4] {
        let dir = t.path().join(format!("next-{bits}"));
        write(tiny_qwen3_next(), &dir, bits);
        let m = load::load(&dir, Precision::Native).unwrap();
        assert_eq!(m.info.architecture, "qwen3_next");
        drop(m);
        common::assert_logits_match(&format!("qwen3_next {bits}-bit long"), &dir, &long_prompt());
        common::assert_logits_match(&format!("qwen3_next {bits}-bit short"), &dir, &common::tiny_prompt(7));
    }
}

#[test]
fn qwen3_5_logits_match_mlx_lm_flat_and_nested() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for bits in [0, 4] {
        let dir = t.path().join(format!("q35-{bits}"));
        write(tiny_qwen3_5(false), &dir, bits);
        common::assert_logits_match(&format!("qwen3_5 {bits}-bit"), &dir, &long_prompt());
    }
    // A multimodal checkpoint nests the text model under text_config and
    // carries a vision tower: skipped, same logits.
    let dir = t.path().join("q35-0");
    common::edit_config(&dir, |c| {
        let text = c.clone();
        *c = json!({"model_type": "qwen3_5", "text_config": text, "vision_config": {"depth": 1}});
    });
    common::edit_tensors(&dir, |t| {
        t.insert("vision_tower.blocks.0.attn.qkv.weight".into(), mlx_rs::ops::ones::<f32>(&[4, 4]).unwrap());
    });
    common::assert_logits_match("qwen3_5 nested", &dir, &long_prompt());
}

/// Qwen3.5-MoE (the issue saw mlx-lm's CPU peer hang on this family; with
/// these shapes on mlx 0.32.2 it runs, dense and 4-bit, in seconds).
#[test]
fn qwen3_5_moe_logits_match_mlx_lm() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for bits in [0, 4] {
        let dir = t.path().join(format!("q35moe-{bits}"));
        write(tiny_qwen3_5(true), &dir, bits);
        common::assert_logits_match(&format!("qwen3_5_moe {bits}-bit"), &dir, &long_prompt());
    }
}

/// 32 greedy tokens equal mlx-lm's on two turns; the second resumes from the
/// snapshot taken at the end of the first reply (prefilling only the new
/// tokens) and still equals mlx-lm's cold run on the whole prompt.
#[test]
fn hybrid_second_turn_resumes_from_a_snapshot_and_matches_a_cold_start() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("next-q4");
    write(tiny_qwen3_next(), &dir, 4);
    common::assert_greedy_matches_mlx_lm_across_two_turns("qwen3_next 4-bit", &dir);
    common::assert_tiny_batch_in("qwen3_next 4-bit", &dir);
    common::assert_prompt_file_round_trip("qwen3_next 4-bit", &dir);
    let dir = t.path().join("q35-q4");
    write(tiny_qwen3_5(false), &dir, 4);
    common::assert_greedy_matches_mlx_lm_across_two_turns("qwen3_5 4-bit", &dir);
    common::assert_tiny_batch_in("qwen3_5 4-bit", &dir);
}

fn load_err(dir: &Path) -> String {
    match load::load(dir, Precision::Native) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_hybrid_configs_and_tensors_are_typed_errors() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("m");
    write(tiny_qwen3_5(false), &dir, 0);
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = cfg.clone();
        f(&mut c);
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        load_err(&dir)
    };
    let e = with(&|c| c["layer_types"] = json!(vec!["linear_attention"; 7]));
    assert!(e.contains("layer_types has 7 entries for 8 layers"), "{e}");
    let e = with(&|c| {
        let mut kinds = vec!["linear_attention"; 8];
        kinds[1] = "full_attention";
        c["layer_types"] = json!(kinds);
    });
    assert!(e.contains("layer_types[1]") && e.contains("full_attention_interval"), "{e}");
    let e = with(&|c| c["full_attention_interval"] = json!(0));
    assert!(e.contains("full_attention_interval"), "{e}");
    let e = with(&|c| c["linear_num_value_heads"] = json!(3));
    assert!(e.contains("linear_num_value_heads"), "{e}");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    // A state parameter of the wrong shape, then a missing conv weight.
    let conv = "language_model.model.layers.0.linear_attn.conv1d.weight";
    let a_log = "language_model.model.layers.2.linear_attn.A_log";
    common::edit_tensors(&dir, |t| {
        t.insert(a_log.into(), mlx_rs::ops::ones::<f32>(&[5]).unwrap());
    });
    let e = load_err(&dir);
    assert!(e.contains(a_log), "{e}");
    common::edit_tensors(&dir, |t| {
        t.insert(a_log.into(), mlx_rs::ops::ones::<f32>(&[4]).unwrap());
        t.remove(conv);
    });
    let e = load_err(&dir);
    assert!(e.contains(conv), "{e}");
}

/// LFM2: 6 layers, gated short convolutions with attention on layers 2 and 5;
/// the feed-forward width auto-adjusted (2/3 of 192, rounded to 32).
fn tiny_lfm2(conv_bias: bool) -> Value {
    json!({"model_type": "lfm2", "vocab_size": 257, "hidden_size": 64, "num_hidden_layers": 6,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096, "norm_eps": 1e-5,
        "conv_bias": conv_bias, "conv_L_cache": 3, "block_dim": 64, "block_ff_dim": 192, "block_multiple_of": 32,
        "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": true, "rope_theta": 1000000.0,
        "tie_word_embeddings": true,
        "layer_types": ["conv", "conv", "full_attention", "conv", "conv", "full_attention"]})
}

#[test]
fn lfm2_logits_match_mlx_lm_and_its_second_turn_resumes_from_a_snapshot() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for (bits, bias) in [(0, true), (4, false)] {
        let dir = t.path().join(format!("lfm2-{bits}"));
        write(tiny_lfm2(bias), &dir, bits);
        common::assert_logits_match(&format!("lfm2 {bits}-bit"), &dir, &long_prompt());
    }
    common::assert_greedy_matches_mlx_lm_across_two_turns("lfm2 4-bit", &t.path().join("lfm2-4"));
    common::assert_tiny_batch_in("lfm2 4-bit", &t.path().join("lfm2-4"));
    // Broken configs and tensors: typed errors naming the field or tensor.
    let dir = t.path().join("lfm2-0");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut c = cfg.clone();
    c["layer_types"] = json!(["conv", "full_attention"]);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("layer_types has 2 entries for 6 layers"), "{e}");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let conv = "model.layers.3.conv.conv.weight";
    common::edit_tensors(&dir, |t| {
        t.remove(conv);
    });
    let e = load_err(&dir);
    assert!(e.contains(conv), "{e}");
}
