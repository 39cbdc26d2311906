//! gpt-oss against Python mlx-lm on tiny random models in MLX format: logits
//! with bf16 and MXFP4 experts over a prompt longer than the sliding window (so
//! the sinks and the window mask both matter), greedy tokens with and without
//! prompt-cache reuse, OpenAI's release layout, a llama.cpp GGUF (dense and
//! MXFP4), and the typed errors of broken configs and tensors.

mod common;

use hearth::models::load::{self, Precision};
use hearth::models::{QuantMode, QuantSpec};
use hearth::synth;
use mlx_rs::Dtype;
use serde_json::{json, Value};
use std::path::Path;

/// 4 layers (sliding, full, sliding, full), window 8, 8 experts, top 2, YaRN.
fn tiny_gpt_oss() -> Value {
    json!({"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 64,
           "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
           "vocab_size": 257, "rms_norm_eps": 1e-5, "rope_theta": 150000.0,
           "tie_word_embeddings": false, "max_position_embeddings": 512, "attention_bias": true,
           "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": 8, "swiglu_limit": 7.0,
           "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
           "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                            "original_max_position_embeddings": 4096, "truncate": false}})
}

fn write(dir: &Path, quant: Option<QuantSpec>, dtype: Dtype) {
    synth::write_quantized(tiny_gpt_oss(), dir, quant, dtype).unwrap();
}

const MXFP4: QuantSpec = QuantSpec { group_size: 32, bits: 4, mode: QuantMode::Mxfp4 };

fn prompt(n: usize) -> Vec<u32> {
    common::tiny_prompt(n)
}

fn logits(dir: &Path, ids: &[u32]) -> mlx_rs::Array {
    let m = load::load(dir, Precision::Native).unwrap();
    assert_eq!(m.info.architecture, "gpt_oss");
    let mut c = m.model.new_cache();
    m.model.logits(&hearth::models::nn::layers::token_array(ids), &mut c, hearth::models::Head::All).unwrap().as_dtype(Dtype::Float32).unwrap()
}

fn max_diff(a: &mlx_rs::Array, b: &mlx_rs::Array) -> f32 {
    a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().try_item_exact::<f32>().unwrap()
}

/// Dense experts in f32: MLX's CPU `gather_mm` runs float32 only, in mlx-lm
/// as in Hearth, so bf16 dense experts are a GPU-only layout (Hearth's `auto`
/// precision loads them as f32 on a CPU).
#[test]
fn gpt_oss_logits_match_mlx_lm_dense() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("f32");
    write(&dir, None, Dtype::Float32);
    // 40 tokens, window 8: the sliding layers see only the last 8 keys.
    common::assert_logits_match("gpt_oss f32", &dir, &prompt(40));
    common::assert_logits_match("gpt_oss f32 short", &dir, &prompt(5));
}

#[test]
fn gpt_oss_mxfp4_logits_match_mlx_lm_and_the_cpu_dequantized_path() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("mxfp4");
    write(&dir, Some(MXFP4), Dtype::Float32);
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization"]["mode"], "mxfp4");
    common::assert_logits_match("gpt_oss mxfp4", &dir, &prompt(40));
    // `auto` on a CPU dequantizes MXFP4 to f32 at load: the same logits.
    let ids = hearth::models::nn::layers::token_array(&prompt(40));
    let run = |precision| {
        let m = load::load(&dir, precision).unwrap();
        let mut c = m.model.new_cache();
        m.model.logits(&ids, &mut c, hearth::models::Head::All).unwrap().as_dtype(Dtype::Float32).unwrap()
    };
    let d = max_diff(&run(Precision::Native), &run(Precision::Float32));
    assert!(d < 1e-4, "dequantized MXFP4 differs by {d}");
    let m = load::load(&dir, Precision::Native).unwrap();
    assert!(m.info.quantization.contains("MXFP4"), "{}", m.info.quantization);
}

#[test]
fn gpt_oss_greedy_tokens_match_mlx_lm_with_cache_reuse() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for (name, quant) in [("q4", QuantSpec::affine(32, 4)), ("mxfp4", MXFP4)] {
        let dir = t.path().join(name);
        write(&dir, Some(quant), Dtype::Float32);
        common::assert_greedy_matches_mlx_lm_across_two_turns(&format!("gpt_oss {name}"), &dir);
        common::assert_tiny_batch_in(&format!("gpt_oss {name}"), &dir);
    }
}

/// OpenAI's release: `gate_up_proj_blocks` bytes with gate and up rows
/// interleaved, `_scales`, `gate_up_proj_bias`, `down_proj_blocks`.
#[test]
fn openai_release_layout_loads_like_the_mlx_folder() {
    use mlx_rs::ops;
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("m");
    write(&dir, Some(MXFP4), Dtype::Float32);
    let ids = prompt(12);
    let want = logits(&dir, &ids);
    common::edit_tensors(&dir, |t| {
        // [E, out, in/8] u32 words -> [E, out, in/32, 16] bytes.
        let blocks = |w: mlx_rs::Array| {
            let s = w.shape().to_vec();
            w.view::<u8>().unwrap().reshape(&[s[0], s[1], s[2] / 4, 16]).unwrap()
        };
        // Rows (axis -2) or bias entries (axis -1) alternating gate, up.
        let interleave = |g: mlx_rs::Array, u: mlx_rs::Array, axis: i32| {
            let st = ops::stack(&[g, u], axis).unwrap();
            let mut s = st.shape().to_vec();
            let a = (s.len() as i32 + axis) as usize - 1;
            s[a] *= 2;
            s.remove(a + 1);
            st.reshape(&s).unwrap()
        };
        for l in 0..4 {
            let p = format!("model.layers.{l}.mlp.experts");
            let mut take = |n: &str| t.remove(&format!("{p}.{n}")).unwrap();
            let (gw, uw) = (blocks(take("gate_proj.weight")), blocks(take("up_proj.weight")));
            let (gs, us) = (take("gate_proj.scales"), take("up_proj.scales"));
            let (gb, ub) = (take("gate_proj.bias"), take("up_proj.bias"));
            let (dw, ds, db) = (blocks(take("down_proj.weight")), take("down_proj.scales"), take("down_proj.bias"));
            t.insert(format!("{p}.gate_up_proj_blocks"), interleave(gw, uw, -3));
            t.insert(format!("{p}.gate_up_proj_scales"), interleave(gs, us, -2));
            t.insert(format!("{p}.gate_up_proj_bias"), interleave(gb, ub, -1));
            t.insert(format!("{p}.down_proj_blocks"), dw);
            t.insert(format!("{p}.down_proj_scales"), ds);
            t.insert(format!("{p}.down_proj_bias"), db);
        }
    });
    assert_eq!(max_diff(&logits(&dir, &ids), &want), 0.0);
}

#[test]
fn a_gpt_oss_gguf_gives_the_mlx_folder_logits_dense_and_mxfp4() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    for (name, quant) in [("f32", None), ("mxfp4", Some(MXFP4))] {
        let dir = t.path().join(name);
        write(&dir, quant, Dtype::Float32);
        let gguf = t.path().join(format!("{name}.gguf"));
        let out = std::process::Command::new(common::python())
            .arg(common::root().join("tests/reference/mlx_to_gguf.py"))
            .arg(&dir)
            .arg(&gguf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ids = prompt(40);
        let d = max_diff(&logits(&gguf, &ids), &logits(&dir, &ids));
        assert!(d < 1e-5, "{name}: GGUF and MLX folder differ by {d}");
    }
}

#[test]
fn broken_gpt_oss_configs_and_tensors_are_typed_errors() {
    let cases: Vec<(&str, Breakage)> = vec![
        ("num_experts_per_tok", Box::new(|d| common::edit_config(d, |c| c["num_experts_per_tok"] = json!(9)))),
        // The config says 6 experts, the tensors hold 8.
        ("model.layers.0.mlp.router", Box::new(|d| common::edit_config(d, |c| c["num_local_experts"] = json!(6)))),
        ("model.layers.3.mlp.experts.down_proj.bias", Box::new(|d| {
            common::edit_tensors(d, |t| {
                t.remove("model.layers.3.mlp.experts.down_proj.bias");
            })
        })),
        ("model.layers.1.self_attn.sinks", Box::new(|d| {
            common::edit_tensors(d, |t| {
                t.remove("model.layers.1.self_attn.sinks");
            })
        })),
        ("nvfp4", Box::new(|d| common::edit_config(d, |c| c["quantization"]["mode"] = json!("nvfp4")))),
        ("layer_types", Box::new(|d| common::edit_config(d, |c| c["layer_types"] = json!(["sliding_attention"])))),
        ("chunked_attention", Box::new(|d| {
            common::edit_config(d, |c| c["layer_types"][0] = json!("chunked_attention"))
        })),
        ("swiglu_limit", Box::new(|d| common::edit_config(d, |c| c["swiglu_limit"] = json!(5.0)))),
    ];
    for (want, break_it) in cases {
        let _g = common::mlx_lock();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("m");
        write(&dir, Some(MXFP4), Dtype::Float32);
        break_it(&dir);
        let e = load::load(&dir, Precision::Native).err().expect("refused").to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// A way to break a copied model folder.
type Breakage = Box<dyn Fn(&Path)>;
