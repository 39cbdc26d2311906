//! Each architecture against Python mlx-lm: a tiny random model in MLX format is
//! written, loaded through Hearth's public loader, and its logits for a fixed
//! prompt are compared with mlx-lm's on the same files.

mod common;

use hearth::synth;
use serde_json::{json, Value};

fn tiny(model_type: &str, tied: bool) -> Value {
    json!({"model_type": model_type, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
           "vocab_size": 257, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "tie_word_embeddings": tied, "max_position_embeddings": 512})
}

fn compare(name: &str, cfg: Value, bits: i32) {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join(name);
    synth::write_config(cfg, &dir, bits, 32, mlx_rs::Dtype::Float32).unwrap();
    // 24 tokens: longer than the Gemma test's sliding window (8), so the window mask matters.
    let prompt: Vec<u32> = vec![1, 17, 42, 99, 3, 200, 128, 7, 64, 250, 5, 33, 77, 180, 2, 9, 111, 222, 13, 48, 96, 160, 240, 31];

    common::assert_logits_match(name, &dir, &prompt);
    let loaded = hearth::models::load::load(&dir, hearth::models::load::Precision::Native).unwrap();
    common::assert_tiny_batch(name, &mut hearth::engine::Session::new(loaded, Some(512)));
    common::assert_prompt_file_round_trip(name, &dir);
}

#[test]
fn llama_matches_mlx_lm() {
    compare("llama", tiny("llama", false), 0);
}

#[test]
fn llama_tied_4bit_matches_mlx_lm() {
    compare("llama-q4", tiny("llama", true), 4);
}

/// SmolLM3: every 4th layer has no RoPE (NoPE); 8 layers so two are NoPE,
/// and one explicit `no_rope_layers` list that differs from the interval.
#[test]
fn smollm3_matches_mlx_lm() {
    let mut c = tiny("smollm3", true);
    c["num_hidden_layers"] = json!(8);
    c["no_rope_layer_interval"] = json!(4);
    compare("smollm3", c.clone(), 0);
    c["no_rope_layers"] = json!([0, 1, 1, 0, 1, 1, 1, 0]);
    compare("smollm3-list-q4", c, 4);
}

/// Ministral 3: YaRN from rope_parameters, Llama 4 query scaling past every
/// 8 positions (original_max 8, so a 24-token prompt crosses it twice), and
/// sliding-window layers (window 8) between full ones.
fn tiny_ministral3() -> Value {
    let mut c = tiny("ministral3", false);
    c["num_hidden_layers"] = json!(4);
    c["sliding_window"] = json!(8);
    c["layer_types"] = json!(["sliding_attention", "full_attention", "sliding_attention", "full_attention"]);
    c["rope_parameters"] = json!({"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0,
        "original_max_position_embeddings": 8, "llama_4_scaling_beta": 0.1, "beta_fast": 32.0, "beta_slow": 1.0,
        "mscale": 1.0, "mscale_all_dim": 1.0});
    c
}

#[test]
fn ministral3_matches_mlx_lm_flat_and_as_mistral3() {
    compare("ministral3", tiny_ministral3(), 0);
    compare("ministral3-q4", tiny_ministral3(), 4);
    // A Mistral 3 checkpoint: the text model nested under text_config and its
    // tensors under language_model., a vision tower beside it (skipped).
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("mistral3");
    synth::write_config(tiny_ministral3(), &dir, 4, 32, mlx_rs::Dtype::Float32).unwrap();
    common::edit_config(&dir, |c| {
        let mut text = c.clone();
        text.as_object_mut().unwrap().remove("quantization");
        let q = c["quantization"].clone();
        *c = json!({"model_type": "mistral3", "text_config": text, "quantization": q, "vision_config": {"hidden_size": 16}});
    });
    common::edit_tensors(&dir, |t| {
        let keys: Vec<String> = t.keys().cloned().collect();
        for k in keys {
            let v = t.remove(&k).unwrap();
            t.insert(format!("language_model.{k}"), v);
        }
        t.insert("vision_tower.patch_conv.weight".into(), mlx_rs::ops::ones::<f32>(&[2, 2]).unwrap());
    });
    drop(_g);
    let prompt: Vec<u32> = (0..24).map(|i| (i * 37 + 11) % 250 + 1).collect();
    let _g = common::mlx_lock();
    common::assert_logits_match("mistral3", &dir, &prompt);
}

#[test]
fn qwen2_matches_mlx_lm() {
    compare("qwen2", tiny("qwen2", true), 0);
}

#[test]
fn qwen3_matches_mlx_lm() {
    compare("qwen3", tiny("qwen3", true), 0);
}

#[test]
fn qwen3_8bit_matches_mlx_lm() {
    compare("qwen3-q8", tiny("qwen3", false), 8);
}

/// Gemma 3: 6 layers so both kinds occur (layer 6 is global), window 8 < prompt length.
fn tiny_gemma3() -> Value {
    let mut c = tiny("gemma3_text", true);
    c["num_hidden_layers"] = json!(6);
    c["sliding_window"] = json!(8);
    c["sliding_window_pattern"] = json!(6);
    c["query_pre_attn_scalar"] = json!(16);
    c["rope_local_base_freq"] = json!(10000.0);
    c["rope_theta"] = json!(1000000.0);
    c
}

#[test]
fn gemma3_matches_mlx_lm() {
    compare("gemma3", tiny_gemma3(), 0);
}

#[test]
fn gemma3_4bit_matches_mlx_lm() {
    compare("gemma3-q4", tiny_gemma3(), 4);
}

/// Phi-3.5-style: fused qkv / gate_up, LongRoPE (factor 8 > 1, so q/k are rescaled too).
fn tiny_phi3() -> Value {
    let mut c = tiny("phi3", false);
    let long: Vec<f64> = (0..8).map(|i| 1.0 + i as f64 * 0.5).collect();
    c["rope_scaling"] = json!({"type": "longrope", "long_factor": long, "short_factor": vec![1.0; 8]});
    c["original_max_position_embeddings"] = json!(64);
    c
}

#[test]
fn phi3_matches_mlx_lm() {
    compare("phi3", tiny_phi3(), 0);
}

#[test]
fn phi3_4bit_matches_mlx_lm() {
    compare("phi3-q4", tiny_phi3(), 4);
}
