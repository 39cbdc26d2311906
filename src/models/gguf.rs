//! GGUF → Hugging Face layout: a config.json built from the metadata, tensors
//! renamed to HF names, and llama Q/K rows restored to HF order.

use super::gguf_file::GgufHeader;
use super::registry;
use crate::error::{Error, Result};
use mlx_rs::Array;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Tensor types MLX's GGUF loader returns usable arrays for: float tensors, and
/// Q4_0/Q4_1/Q8_0 as affine-quantized triplets with group size 32.
const MLX_NATIVE: &[&str] = &["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"];

pub const GGUF_GROUP_SIZE: i32 = 32;

/// config.json equivalent of a GGUF's metadata.
pub fn config_from_metadata(h: &GgufHeader) -> Result<Value> {
    let arch = h.architecture()?.to_string();
    registry::check_supported(&arch)?;
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
    let mut cfg = json!({
        "model_type": arch,
        "architectures": [format!("{}ForCausalLM", capitalize(&arch))],
        "hidden_size": req("embedding_length")?,
        "intermediate_size": req("feed_forward_length")?,
        "num_hidden_layers": req("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": h.get_u64(&key("attention.head_count_kv")).unwrap_or(heads),
        "rms_norm_eps": h.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "rope_theta": h.get_f64(&key("rope.freq_base")).unwrap_or(10000.0),
        "max_position_embeddings": h.get_u64(&key("context_length")).unwrap_or(4096),
        "vocab_size": n_vocab,
        "tie_word_embeddings": !h.tensors.iter().any(|t| t.name == "output.weight"),
    });
    if let Some(hd) = h.get_u64(&key("attention.key_length")) {
        cfg["head_dim"] = json!(hd);
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

/// Loads the tensors of a validated GGUF with HF names.
pub fn load_tensors(h: &GgufHeader, config: &Value) -> Result<HashMap<String, Array>> {
    for t in &h.tensors {
        let ty = t.type_name();
        if !MLX_NATIVE.contains(&ty.as_str()) {
            return Err(Error::UnsupportedTensorType { tensor: t.name.clone(), ggml_type: ty });
        }
    }
    let file = mlx_rs::io::GgufFile::load(&h.path)?;
    let raw = file.arrays()?;
    let heads = config["num_attention_heads"].as_i64().unwrap_or(1) as i32;
    let kv_heads = config["num_key_value_heads"].as_i64().unwrap_or(heads as i64) as i32;
    let permuted = h.get_str("general.architecture") == Some("llama");
    let mut out = HashMap::with_capacity(raw.len());
    for (name, array) in raw {
        let (base, suffix) = name
            .rsplit_once('.')
            .ok_or_else(|| Error::UnexpectedTensors(name.clone()))?;
        let hf = hf_name(base).ok_or_else(|| Error::UnexpectedTensors(name.clone()))?;
        let mut array = array;
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

fn unpermute_rows(a: &Array, n_head: i32) -> Result<Array> {
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    if rows % (2 * n_head) != 0 {
        return Err(Error::Config(format!("cannot split {rows} rows into {n_head} heads")));
    }
    Ok(a.reshape(&[n_head, rows / n_head / 2, 2, cols])?
        .swap_axes(1, 2)?
        .reshape(&[rows, cols])?)
}
