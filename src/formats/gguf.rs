//! GGUF → Hugging Face layout: a config.json built from the metadata, tensors
//! renamed to HF names, and llama Q/K rows restored to HF order.

use super::gguf_header::GgufHeader;
use crate::error::{Error, Result};
use mlx_rs::Array;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Tensor types MLX's GGUF loader returns usable arrays for: float tensors, and
/// Q4_0/Q4_1/Q8_0 as affine-quantized triplets with group size 32.
const MLX_NATIVE: &[&str] = &["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"];

pub const GGUF_GROUP_SIZE: i32 = 32;

/// Every tensor is of a type Hearth can read (checked before anything is loaded,
/// and by import validation).
pub fn check_tensor_types(h: &GgufHeader) -> Result<()> {
    match h.tensors.iter().find(|t| !super::dequant::supported(t.ggml_type)) {
        Some(t) => Err(Error::UnsupportedTensorType { tensor: t.name.clone(), ggml_type: t.type_name() }),
        None => Ok(()),
    }
}

/// config.json equivalent of a GGUF's metadata (the caller checks that the
/// architecture is one Hearth implements: `models::registry::check_supported`).
pub fn config_from_metadata(h: &GgufHeader) -> Result<Value> {
    let arch = h.architecture()?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let req = |k: &str| {
        h.get_u64(&key(k))
            .ok_or_else(|| Error::Config(format!("GGUF metadata lacks {}", key(k))))
    };
    let n_vocab = h
        .get_u64(&key("vocab_size"))
        .or_else(|| h.string_array("tokenizer.ggml.tokens").map(|t| t.len() as u64))
        .ok_or_else(|| Error::Config("GGUF metadata has no vocabulary size".into()))?;
    let heads = req("attention.head_count")?;
    let kv_heads = h.get_u64(&key("attention.head_count_kv")).unwrap_or(heads);
    let layers = req("block_count")?;
    let hidden = req("embedding_length")?;
    // Checked before anything divides by them or sizes an allocation with them.
    if !(1..=1024).contains(&heads) || !(1..=heads).contains(&kv_heads) || heads % kv_heads != 0 {
        return Err(Error::Config(format!(
            "GGUF metadata: {heads} attention heads and {kv_heads} key/value heads do not make a model"
        )));
    }
    if !(1..=1024).contains(&layers) || !(1..=1 << 17).contains(&hidden) || !(1..=1 << 22).contains(&n_vocab) {
        return Err(Error::Config(format!(
            "GGUF metadata: {layers} layers, width {hidden} and {n_vocab} tokens are out of any model's range"
        )));
    }
    let mut cfg = json!({
        "model_type": arch,
        "architectures": [format!("{}ForCausalLM", capitalize(&arch))],
        "hidden_size": req("embedding_length")?,
        "intermediate_size": req("feed_forward_length").or_else(|_| req("expert_feed_forward_length"))?,
        "num_hidden_layers": req("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": h.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "rope_theta": h.get_f64(&key("rope.freq_base")).unwrap_or(10000.0),
        "max_position_embeddings": h.get_u64(&key("context_length")).unwrap_or(4096).min(1 << 24),
        "vocab_size": n_vocab,
        "tie_word_embeddings": !h.tensors.iter().any(|t| t.name == "output.weight"),
    });
    if let Some(hd) = h.get_u64(&key("attention.key_length")) {
        cfg["head_dim"] = json!(hd);
    }
    if let Some(w) = h.get_u64(&key("attention.sliding_window")) {
        cfg["sliding_window"] = json!(w);
    }
    if arch == "gemma3" {
        // GGUF does not carry Gemma 3's attention scale; like llama.cpp, 27B
        // (hidden 5376) uses hidden/heads and every other size the head size.
        let hidden = req("embedding_length")?;
        let hd = h.get_u64(&key("attention.key_length")).unwrap_or(hidden / heads.max(1));
        cfg["query_pre_attn_scalar"] = json!(if hidden == 5376 { hidden / heads.max(1) } else { hd });
        cfg["rope_local_base_freq"] = json!(10000.0);
        cfg["sliding_window_pattern"] = json!(6);
    }
    if let Some(experts) = h.get_u64(&key("expert_count")).filter(|&e| e > 0) {
        let used = req("expert_used_count")?;
        if used == 0 || used > experts || experts > 4096 {
            return Err(Error::Config(format!("GGUF metadata: {used} of {experts} experts per token")));
        }
        cfg["num_experts"] = json!(experts);
        cfg["num_experts_per_tok"] = json!(used);
        cfg["moe_intermediate_size"] = json!(req("expert_feed_forward_length")?);
        // llama.cpp's Qwen3-MoE: every layer sparse, top-k weights renormalised.
        cfg["decoder_sparse_step"] = json!(1);
        cfg["mlp_only_layers"] = json!([]);
        cfg["norm_topk_prob"] = json!(true);
    }
    if arch == "qwen3moe" {
        cfg["model_type"] = json!("qwen3_moe");
        cfg["architectures"] = json!(["Qwen3MoeForCausalLM"]);
    }
    if arch == "gpt-oss" {
        // llama.cpp's gpt-oss: sliding and full layers alternate from a
        // sliding one, biases everywhere, YaRN with the release's betas.
        cfg["model_type"] = json!("gpt_oss");
        cfg["architectures"] = json!(["GptOssForCausalLM"]);
        cfg["num_local_experts"] = cfg["num_experts"].clone();
        cfg["intermediate_size"] = json!(req("expert_feed_forward_length")?);
        cfg["attention_bias"] = json!(true);
        cfg["swiglu_limit"] = json!(7.0);
        let kinds: Vec<&str> = (0..layers).map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }).collect();
        cfg["layer_types"] = json!(kinds);
        if h.get_str(&key("rope.scaling.type")) == Some("yarn") {
            cfg["rope_scaling"] = json!({
                "rope_type": "yarn",
                "factor": h.get_f64(&key("rope.scaling.factor")).unwrap_or(32.0),
                "original_max_position_embeddings": h.get_u64(&key("rope.scaling.original_context_length")).unwrap_or(4096),
                "beta_fast": 32.0, "beta_slow": 1.0,
            });
        }
    }
    Ok(cfg)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Maps a GGUF tensor base name (without .weight) to the HF module path.
pub fn hf_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd" => "model.embed_tokens".into(),
        "output_norm" => "model.norm".into(),
        "output" => "lm_head".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (i, part) = rest.split_once('.')?;
            let i: usize = i.parse().ok()?;
            let m = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                // Mixture of experts: the router and the stacked experts.
                "ffn_gate_inp" => "mlp.gate",
                "ffn_gate_exps" => "mlp.switch_mlp.gate_proj",
                "ffn_up_exps" => "mlp.switch_mlp.up_proj",
                "ffn_down_exps" => "mlp.switch_mlp.down_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                _ => return None,
            };
            format!("model.layers.{i}.{m}")
        }
    })
}

/// Loads the tensors of a validated GGUF with HF names, reporting
/// `(tensor bytes read, tensor bytes)` through `on`.
pub fn load_tensors(h: &GgufHeader, config: &Value, on: &mut dyn FnMut(u64, u64)) -> Result<HashMap<String, Array>> {
    // MLX's GGUF reader opens files read-write (gguflib maps them writable):
    // on read-only storage (a locked volume, a read-only grant) it fails, so
    // such files are read here, read-only, like the types MLX cannot read.
    let all_native =
        h.tensors.iter().all(|t| MLX_NATIVE.contains(&t.type_name().as_str())) && writable(&h.path);
    let total = h.tensor_bytes();
    on(0, total);
    let raw = if all_native {
        // MLX reads the whole file in one call.
        let raw = mlx_rs::io::GgufFile::load(&h.path)?.arrays()?;
        on(total, total);
        raw
    } else {
        decode_in_rust(h, on)?
    };
    let heads = config["num_attention_heads"].as_i64().unwrap_or(1) as i32;
    let kv_heads = config["num_key_value_heads"].as_i64().unwrap_or(heads as i64) as i32;
    let arch = h.get_str("general.architecture").unwrap_or("");
    let permuted = arch == "llama";
    let mut out = HashMap::with_capacity(raw.len());
    for (name, array) in raw {
        let (base, suffix) = name
            .rsplit_once('.')
            .ok_or_else(|| Error::UnexpectedTensors(name.clone()))?;
        // gpt-oss's sinks are a plain tensor in HF names (`self_attn.sinks`).
        if arch == "gpt-oss" && base.ends_with(".attn_sinks") && suffix == "weight" {
            let i = base.split('.').nth(1).unwrap_or("");
            out.insert(format!("model.layers.{i}.self_attn.sinks"), array);
            continue;
        }
        let hf = hf_name_for(arch, base).ok_or_else(|| Error::UnexpectedTensors(name.clone()))?;
        let mut array = array;
        // llama.cpp stores Gemma's RMSNorm weights as 1 + w; the model adds the 1.
        if arch == "gemma3" && base.ends_with("norm") && suffix == "weight" {
            array = array.subtract(mlx_rs::array!(1.0f32))?;
        }
        // llama.cpp's converter interleaves Q/K rows for its RoPE; undo it so the
        // weights are in HF order. Rows are output features and quantization
        // groups run along inputs, so this is exact for quantized triplets too.
        if permuted && array.ndim() == 2 {
            if base.ends_with(".attn_q") {
                array = unpermute_rows(&array, heads)?;
            } else if base.ends_with(".attn_k") {
                array = unpermute_rows(&array, kv_heads)?;
            }
        }
        out.insert(format!("{hf}.{suffix}"), array);
    }
    Ok(out)
}

/// Whether this process may open `path` for writing.
fn writable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).is_ok_and(|m| !m.permissions().readonly())
    }
}

/// Every tensor read and decoded in Rust (K-quants, Q5_*, …), then matrices
/// re-quantized to MLX affine 4- or 8-bit (group 32) so memory stays small.
fn decode_in_rust(h: &GgufHeader, on: &mut dyn FnMut(u64, u64)) -> Result<HashMap<String, Array>> {
    let mut out = HashMap::with_capacity(h.tensors.len() * 3);
    let (mut done, total) = (0, h.tensor_bytes());
    for t in &h.tensors {
        let bytes = super::gguf_header::read_tensor_bytes(h, t)?;
        done += bytes.len() as u64;
        on(done, total);
        let n = t.n_elements() as usize;
        let data = super::dequant::dequantize(t.ggml_type, &bytes, n)
            .ok_or_else(|| Error::UnsupportedTensorType { tensor: t.name.clone(), ggml_type: t.type_name() })?;
        let shape: Vec<i32> = t.dims.iter().rev().map(|&d| d as i32).collect();
        let dense = Array::from_slice(&data, &shape);
        let (base, _) = t.name.rsplit_once('.').unwrap_or((&t.name, ""));
        if t.ggml_type == super::dequant::MXFP4 && shape.len() >= 2 {
            // Kept as MXFP4: the same codes and scales in MLX's layout.
            let (codes, scales) = super::dequant::mxfp4_to_mlx(&bytes, n)
                .ok_or_else(|| Error::UnsupportedTensorType { tensor: t.name.clone(), ggml_type: t.type_name() })?;
            let cols = shape[shape.len() - 1];
            let mut wshape = shape.clone();
            *wshape.last_mut().expect("2+ dims") = cols / 2;
            let w = Array::from_slice(&codes, &wshape).view::<u32>()?;
            let mut sshape = shape.clone();
            *sshape.last_mut().expect("2+ dims") = cols / 32;
            let s = Array::from_slice(&scales, &sshape);
            mlx_rs::transforms::eval([&w, &s])?;
            out.insert(format!("{base}.weight"), w);
            out.insert(format!("{base}.scales"), s);
            continue;
        }
        let bits = super::dequant::requant_bits(t.ggml_type);
        match bits {
            // Matrices and expert stacks [experts, out, in] alike.
            Some(bits) if shape.len() >= 2 && shape[shape.len() - 1] % GGUF_GROUP_SIZE == 0 => {
                let (w, s, b) = mlx_rs::ops::quantize(&dense, GGUF_GROUP_SIZE, bits)?;
                mlx_rs::transforms::eval([&w, &s, &b])?;
                out.insert(format!("{base}.weight"), w);
                out.insert(format!("{base}.scales"), s);
                out.insert(format!("{base}.biases"), b);
            }
            _ => {
                mlx_rs::transforms::eval([&dense])?;
                out.insert(t.name.clone(), dense);
            }
        }
    }
    Ok(out)
}

/// As `hf_name`, with Gemma 3's four norms per block and gpt-oss's names.
fn hf_name_for(arch: &str, gguf: &str) -> Option<String> {
    if arch == "gpt-oss" {
        if let Some((i, part)) = gguf.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            let m = match part {
                "post_attention_norm" => "post_attention_layernorm",
                "ffn_gate_inp" => "mlp.router",
                "ffn_gate_exps" => "mlp.experts.gate_proj",
                "ffn_up_exps" => "mlp.experts.up_proj",
                "ffn_down_exps" => "mlp.experts.down_proj",
                _ => return hf_name(gguf),
            };
            return Some(format!("model.layers.{}.{m}", i.parse::<usize>().ok()?));
        }
    }
    if arch == "gemma3" {
        if let Some((i, part)) = gguf.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            let m = match part {
                "ffn_norm" => "pre_feedforward_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                _ => return hf_name(gguf),
            };
            return Some(format!("model.layers.{}.{m}", i.parse::<usize>().ok()?));
        }
    }
    hf_name(gguf)
}

fn unpermute_rows(a: &Array, n_head: i32) -> Result<Array> {
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    if rows % (2 * n_head) != 0 {
        return Err(Error::Config(format!("cannot split {rows} rows into {n_head} heads")));
    }
    Ok(a.reshape(&[n_head, rows / n_head / 2, 2, cols])?
        .swap_axes(1, 2)?
        .reshape(&[rows, cols])?)
}

/// The .gguf files directly inside `dir` (sorted).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

