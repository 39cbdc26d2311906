//! Mixture-of-experts models against Python mlx-lm on tiny random models in
//! MLX format: logits (dense and 4-bit experts, router ties, the sorted prefill
//! path), greedy tokens with and without prompt-cache reuse, a GGUF-free HF
//! layout with per-expert tensors, and the typed errors of broken configs.

mod common;

use hearth::models::load::{self, Precision};
use hearth::synth;
use serde_json::{json, Value};
use std::path::Path;

/// Qwen3-MoE: 3 layers, the middle one dense (mlp_only_layers), 8 experts, top 2.
fn tiny_qwen3_moe() -> Value {
    json!({"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
           "vocab_size": 257, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "tie_word_embeddings": false, "max_position_embeddings": 512,
           "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
           "decoder_sparse_step": 1, "mlp_only_layers": [1], "norm_topk_prob": true})
}

fn write(dir: &Path, cfg: Value, bits: i32) {
    synth::write_config(cfg, dir, bits, 32, mlx_rs::Dtype::Float32).unwrap();
}

fn prompt(n: usize) -> Vec<u32> {
    common::tiny_prompt(n)
}

#[test]
fn qwen3_moe_logits_match_mlx_lm_dense_with_router_ties() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("qwen3-moe");
    write(&dir, tiny_qwen3_moe(), 0);
    // Experts 0 and 1 of layer 0 get the same router row: every token scores
    // them equally, so the top-k must break the tie exactly as MLX does.
    common::edit_tensors(&dir, |t| {
        use mlx_rs::ops::indexing::IndexOp;
        let g = &t["model.layers.0.mlp.gate.weight"];
        let row = g.index((0..1, ..));
        let rest = g.index((1.., ..));
        let tied = mlx_rs::ops::concatenate(&[row.clone(), row, rest.index((1.., ..))], 0).unwrap();
        t.insert("model.layers.0.mlp.gate.weight".into(), tied);
    });
    // 12 tokens x 2 experts: the unsorted path; 40 x 2 = 80: sorted by expert.
    common::assert_logits_match("qwen3_moe short", &dir, &prompt(12));
    common::assert_logits_match("qwen3_moe long", &dir, &prompt(40));
}

#[test]
fn qwen3_moe_4bit_logits_and_greedy_tokens_match_mlx_lm_with_cache_reuse() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("qwen3-moe-q4");
    write(&dir, tiny_qwen3_moe(), 4);
    common::assert_logits_match("qwen3_moe 4-bit", &dir, &prompt(40));
    // On a CPU, `auto` dequantizes the expert stacks to f32 at load: same logits.
    let ids = hearth::models::nn::layers::token_array(&prompt(40));
    let run = |precision| {
        let m = load::load(&dir, precision).unwrap();
        let mut c = m.model.new_cache();
        m.model.logits(&ids, &mut c, hearth::models::Head::All).unwrap().as_dtype(mlx_rs::Dtype::Float32).unwrap()
    };
    let (native, f32) = (run(Precision::Native), run(Precision::Float32));
    let diff = native.subtract(&f32).unwrap().abs().unwrap().max(None).unwrap().try_item_exact::<f32>().unwrap();
    assert!(diff < 1e-4, "f32 vs quantized experts differ by {diff}");

    common::assert_greedy_matches_mlx_lm_across_two_turns("qwen3_moe 4-bit", &dir);
    common::assert_tiny_batch_in("qwen3_moe 4-bit", &dir);
}

#[test]
fn per_expert_checkpoints_are_stacked_at_load() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("qwen3-moe-hf");
    write(&dir, tiny_qwen3_moe(), 0);
    let stacked = load::load(&dir, Precision::Native).unwrap();
    let mut c1 = stacked.model.new_cache();
    let ids = hearth::models::nn::layers::token_array(&prompt(10));
    let want = stacked.model.logits(&ids, &mut c1, hearth::models::Head::Last(1)).unwrap();
    // The Hugging Face layout: one tensor per expert.
    common::edit_tensors(&dir, |t| {
        use mlx_rs::ops::indexing::IndexOp;
        for l in [0, 2] {
            for n in ["gate_proj", "up_proj", "down_proj"] {
                let s = t.remove(&format!("model.layers.{l}.mlp.switch_mlp.{n}.weight")).unwrap();
                for e in 0..8 {
                    t.insert(format!("model.layers.{l}.mlp.experts.{e}.{n}.weight"), s.index(e));
                }
            }
        }
    });
    let split = load::load(&dir, Precision::Native).unwrap();
    let mut c2 = split.model.new_cache();
    let got = split.model.logits(&ids, &mut c2, hearth::models::Head::Last(1)).unwrap();
    let diff = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().try_item_exact::<f32>().unwrap();
    assert_eq!(diff, 0.0);
}

#[test]
fn broken_moe_configs_and_tensors_are_typed_errors() {
    let cases: Vec<(&str, Breakage)> = vec![
        ("num_experts_per_tok", Box::new(|d| common::edit_config(d, |c| c["num_experts_per_tok"] = json!(9)))),
        // The config says 6 experts, the tensors hold 8.
        ("model.layers.0.mlp.gate.weight", Box::new(|d| common::edit_config(d, |c| c["num_experts"] = json!(6)))),
        ("model.layers.2.mlp.switch_mlp.up_proj.weight", Box::new(|d| {
            common::edit_tensors(d, |t| {
                t.remove("model.layers.2.mlp.switch_mlp.up_proj.weight");
            })
        })),
        ("nvfp4", Box::new(|d| common::edit_config(d, |c| c["quantization"] = json!({"group_size": 16, "bits": 4, "mode": "nvfp4"})))),
    ];
    for (want, break_it) in cases {
        let _g = common::mlx_lock();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("m");
        write(&dir, tiny_qwen3_moe(), 0);
        break_it(&dir);
        let e = load::load(&dir, Precision::Native).err().expect("refused").to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn a_qwen3_moe_gguf_gives_the_mlx_folder_logits() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("qwen3-moe");
    let mut cfg = tiny_qwen3_moe();
    // llama.cpp's qwen3moe has no dense layers.
    cfg["mlp_only_layers"] = json!([]);
    write(&dir, cfg, 0);
    let gguf = t.path().join("qwen3-moe.gguf");
    let out = std::process::Command::new(common::python())
        .arg(common::root().join("tests/reference/mlx_to_gguf.py"))
        .arg(&dir)
        .arg(&gguf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids = hearth::models::nn::layers::token_array(&prompt(40));
    let logits = |p: &Path| {
        let m = load::load(p, Precision::Native).unwrap();
        assert_eq!(m.info.architecture, "qwen3_moe");
        let mut c = m.model.new_cache();
        m.model.logits(&ids, &mut c, hearth::models::Head::All).unwrap()
    };
    let diff = logits(&gguf).subtract(logits(&dir)).unwrap().abs().unwrap().max(None).unwrap().try_item_exact::<f32>().unwrap();
    assert!(diff < 1e-5, "GGUF and MLX folder differ by {diff}");
}

/// A way to break a copied model folder.
type Breakage = Box<dyn Fn(&Path)>;
