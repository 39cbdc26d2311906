//! Synthetic models for benchmarks: random weights at real model shapes, written
//! in mlx-community layout (config.json with `quantization`, model.safetensors,
//! a byte-level tokenizer), so Hearth and Python mlx-lm load the very same files.
//! Speed does not depend on the weights' values, only on their shapes and types.

use crate::models::nn::quant::{self, QuantMode, QuantSpec};
use crate::error::{io_err, Error, Result};
use mlx_rs::{random, Array, Dtype};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

mod presets;
pub use presets::preset;

/// A byte-level BPE tokenizer with the 256 byte tokens and an end-of-text token.
fn byte_tokenizer() -> Value {
    let table = crate::chat::tokenizer::bytes_to_unicode();
    let mut vocab = serde_json::Map::new();
    for (i, c) in table.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    vocab.insert("<|endoftext|>".into(), json!(256));
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// Writes a random model of `preset` shape to `dst`; `quant` None keeps it dense.
pub fn write(preset_name: &str, dst: &Path, quant: Option<QuantSpec>, dtype: Dtype) -> Result<u64> {
    write_quantized(preset(preset_name)?, dst, quant, dtype)
}

/// `write_quantized` in MLX's affine mode; `bits` = 0 keeps it dense.
pub fn write_config(cfg: Value, dst: &Path, bits: i32, group_size: i32, dtype: Dtype) -> Result<u64> {
    write_quantized(cfg, dst, (bits > 0).then(|| QuantSpec::affine(group_size, bits)), dtype)
}

/// Writes a random model for any `config` of the families synth knows (llama,
/// qwen2, qwen3, qwen3_moe, gemma3_text, phi3, gpt_oss), quantized as
/// `mlx_lm.convert -q` would (gpt-oss's routers at 8 bits, group 64, as its
/// `quant_predicate` asks). Norm weights are random around 1 and biases and
/// sinks random, so every parameter influences the output (what the parity
/// tests need).
pub fn write_quantized(mut cfg: Value, dst: &Path, quant: Option<QuantSpec>, dtype: Dtype) -> Result<u64> {
    let g = |k: &str| cfg[k].as_i64().unwrap_or(0) as i32;
    let (h, inter, layers, nh, nkv, vocab) = (
        g("hidden_size"),
        g("intermediate_size"),
        g("num_hidden_layers"),
        g("num_attention_heads"),
        g("num_key_value_heads"),
        g("vocab_size"),
    );
    let hd = if cfg["head_dim"].is_number() { g("head_dim") } else { h / nh };
    let gemma = cfg["model_type"] == "gemma3_text";
    let phi3 = cfg["model_type"] == "phi3";
    let moe = cfg["model_type"] == "qwen3_moe";
    let gpt_oss = cfg["model_type"] == "gpt_oss";
    let mt = cfg["model_type"].as_str().unwrap_or("").to_string();
    let hybrid = mt == "qwen3_next" || mt.starts_with("qwen3_5");
    // Qwen3.5 checkpoints keep the language model under `language_model.`.
    let root = if mt.starts_with("qwen3_5") { "language_model." } else { "" };
    let qk_norm = cfg["model_type"] == "qwen3" || gemma || moe;
    let (experts, moe_inter, sparse_step) = if gpt_oss {
        (g("num_local_experts"), inter, 1)
    } else {
        (g("num_experts"), g("moe_intermediate_size"), g("decoder_sparse_step").max(1))
    };
    let router_quant = QuantSpec::affine(64, 8);
    let dense_only: Vec<i64> = cfg["mlp_only_layers"].as_array().map(|a| a.iter().filter_map(|v| v.as_i64()).collect()).unwrap_or_default();
    // Gemma 4's config ties the head unless it says otherwise.
    let tied = cfg["tie_word_embeddings"].as_bool().unwrap_or(mt == "gemma4_text");
    let mut key = random::key(0)?;
    let mut tensors: HashMap<String, Array> = HashMap::new();
    let mut next_key = || -> Result<Array> {
        let parts = random::split(&key, 2)?;
        key = parts.0;
        Ok(parts.1)
    };
    // A matrix [out, in], or a stack of expert matrices [experts, out, in].
    let mut linear_as = |name: &str, shape: &[i32], tensors: &mut HashMap<String, Array>, quant: Option<QuantSpec>| -> Result<()> {
        let k = next_key()?;
        let w = random::normal::<f32>(shape, 0.0, 0.02, &k)?.as_dtype(dtype)?;
        if let Some(spec) = quant {
            let (q, s, b) = quant::quantize(&w, spec)?;
            mlx_rs::transforms::eval([&q, &s])?;
            tensors.insert(format!("{name}.weight"), q);
            tensors.insert(format!("{name}.scales"), s);
            if let Some(b) = b {
                b.eval()?;
                tensors.insert(format!("{name}.biases"), b);
            }
        } else {
            w.eval()?;
            tensors.insert(format!("{name}.weight"), w);
        }
        Ok(())
    };
    let qkv_bias = cfg["model_type"] == "qwen2" || gpt_oss;
    let mut vec_key = random::key(1)?;
    let mut ones = |n: i32| -> Result<Array> {
        let parts = random::split(&vec_key, 2)?;
        vec_key = parts.0;
        let noise = random::normal::<f32>(&[n][..], 0.0, 0.1, &parts.1)?;
        let v = noise.add(Array::from_f32(1.0))?.as_dtype(dtype)?;
        v.eval()?;
        Ok(v)
    };
    linear_as(&format!("{root}model.embed_tokens"), &[vocab, h], &mut tensors, quant)?;
    // Layers quantized at 8 bits whatever the rest uses (routers, as mlx-lm's quant_predicate).
    let mut overrides: Vec<String> = Vec::new();
    if mt == "lfm2" {
        // LFM2: gated short convolutions, attention on the listed layers.
        let c: crate::models::arch::lfm2::Config = serde_json::from_value(cfg.clone()).map_err(|e| Error::Config(e.to_string()))?;
        let (attn, ff, k) = (c.attention_layers()?, c.ff_dim()?, c.conv_l_cache);
        for i in 0..layers {
            let p = format!("model.layers.{i}");
            if attn.contains(&i) {
                let a = format!("{p}.self_attn");
                linear_as(&format!("{a}.q_proj"), &[nh * hd, h], &mut tensors, quant)?;
                linear_as(&format!("{a}.k_proj"), &[nkv * hd, h], &mut tensors, quant)?;
                linear_as(&format!("{a}.v_proj"), &[nkv * hd, h], &mut tensors, quant)?;
                linear_as(&format!("{a}.out_proj"), &[h, nh * hd], &mut tensors, quant)?;
                tensors.insert(format!("{a}.q_layernorm.weight"), ones(hd)?);
                tensors.insert(format!("{a}.k_layernorm.weight"), ones(hd)?);
            } else {
                let cv = format!("{p}.conv");
                linear_as(&format!("{cv}.in_proj"), &[3 * h, h], &mut tensors, quant)?;
                linear_as(&format!("{cv}.out_proj"), &[h, h], &mut tensors, quant)?;
                let taps = ones(k)?.reshape(&[1, -1, 1])?.subtract(Array::from_f32(0.5))?;
                tensors.insert(format!("{cv}.conv.weight"), ones(h)?.reshape(&[-1, 1, 1])?.multiply(taps)?.as_dtype(dtype)?);
                if c.conv_bias {
                    for n in ["in_proj", "out_proj"] {
                        let d = if n == "in_proj" { 3 * h } else { h };
                        tensors.insert(format!("{cv}.{n}.bias"), ones(d)?.subtract(Array::from_f32(1.0))?.as_dtype(dtype)?);
                    }
                    tensors.insert(format!("{cv}.conv.bias"), ones(h)?.subtract(Array::from_f32(1.0))?.as_dtype(dtype)?);
                }
            }
            linear_as(&format!("{p}.feed_forward.w1"), &[ff, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.feed_forward.w3"), &[ff, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.feed_forward.w2"), &[h, ff], &mut tensors, quant)?;
            tensors.insert(format!("{p}.operator_norm.weight"), ones(h)?);
            tensors.insert(format!("{p}.ffn_norm.weight"), ones(h)?);
        }
        tensors.insert("model.embedding_norm.weight".into(), ones(h)?);
    }
    if mt == "gemma4_text" {
        gemma4_tensors(&cfg, quant, &mut tensors, &mut linear_as, &mut ones, &mut overrides)?;
    }
    // LFM2's and Gemma 4's layers were written above, by their own writers.
    let generic_layers = if mt == "lfm2" || mt == "gemma4_text" { 0 } else { layers };
    for i in 0..generic_layers {
        let p = format!("{root}model.layers.{i}");
        if hybrid {
            let interval = cfg["full_attention_interval"].as_i64().unwrap_or(4) as i32;
            let (nk, nv, dk, dv, kernel) = (
                g("linear_num_key_heads"),
                g("linear_num_value_heads"),
                g("linear_key_head_dim"),
                g("linear_value_head_dim"),
                g("linear_conv_kernel_dim"),
            );
            if (i + 1) % interval != 0 {
                let a = format!("{p}.linear_attn");
                let (kd, vd) = (nk * dk, nv * dv);
                if root.is_empty() {
                    linear_as(&format!("{a}.in_proj_qkvz"), &[2 * kd + 2 * vd, h], &mut tensors, quant)?;
                    linear_as(&format!("{a}.in_proj_ba"), &[2 * nv, h], &mut tensors, quant)?;
                } else {
                    linear_as(&format!("{a}.in_proj_qkv"), &[2 * kd + vd, h], &mut tensors, quant)?;
                    linear_as(&format!("{a}.in_proj_z"), &[vd, h], &mut tensors, quant)?;
                    linear_as(&format!("{a}.in_proj_b"), &[nv, h], &mut tensors, quant)?;
                    linear_as(&format!("{a}.in_proj_a"), &[nv, h], &mut tensors, quant)?;
                }
                linear_as(&format!("{a}.out_proj"), &[h, vd], &mut tensors, quant)?;
                // The depthwise conv is not a linear layer: never quantized.
                let conv = ones(2 * kd + vd)?.reshape(&[-1, 1, 1])?;
                let taps = ones(kernel)?.reshape(&[1, -1, 1])?.subtract(Array::from_f32(0.5))?;
                tensors.insert(format!("{a}.conv1d.weight"), conv.multiply(taps)?.as_dtype(dtype)?);
                tensors.insert(format!("{a}.dt_bias"), ones(nv)?);
                tensors.insert(format!("{a}.A_log"), ones(nv)?.subtract(Array::from_f32(1.5))?.as_dtype(Dtype::Float32)?);
                tensors.insert(format!("{a}.norm.weight"), ones(dv)?);
            } else {
                let a = format!("{p}.self_attn");
                linear_as(&format!("{a}.q_proj"), &[2 * nh * hd, h], &mut tensors, quant)?;
                linear_as(&format!("{a}.k_proj"), &[nkv * hd, h], &mut tensors, quant)?;
                linear_as(&format!("{a}.v_proj"), &[nkv * hd, h], &mut tensors, quant)?;
                linear_as(&format!("{a}.o_proj"), &[h, nh * hd], &mut tensors, quant)?;
                tensors.insert(format!("{a}.q_norm.weight"), ones(hd)?);
                tensors.insert(format!("{a}.k_norm.weight"), ones(hd)?);
            }
            let sparse = experts > 0
                && (!root.is_empty() || (!dense_only.contains(&(i as i64)) && (i + 1) % sparse_step == 0));
            if sparse {
                let m = format!("{p}.mlp");
                let si = g("shared_expert_intermediate_size");
                // Routers and the shared expert's gate at 8 bits, as mlx-lm's quant_predicate.
                linear_as(&format!("{m}.gate"), &[experts, h], &mut tensors, quant.map(|_| router_quant))?;
                linear_as(&format!("{m}.shared_expert_gate"), &[1, h], &mut tensors, quant.map(|_| router_quant))?;
                overrides.push(format!("{m}.gate"));
                overrides.push(format!("{m}.shared_expert_gate"));
                linear_as(&format!("{m}.switch_mlp.gate_proj"), &[experts, moe_inter, h], &mut tensors, quant)?;
                linear_as(&format!("{m}.switch_mlp.up_proj"), &[experts, moe_inter, h], &mut tensors, quant)?;
                linear_as(&format!("{m}.switch_mlp.down_proj"), &[experts, h, moe_inter], &mut tensors, quant)?;
                linear_as(&format!("{m}.shared_expert.gate_proj"), &[si, h], &mut tensors, quant)?;
                linear_as(&format!("{m}.shared_expert.up_proj"), &[si, h], &mut tensors, quant)?;
                linear_as(&format!("{m}.shared_expert.down_proj"), &[h, si], &mut tensors, quant)?;
            } else {
                linear_as(&format!("{p}.mlp.gate_proj"), &[inter, h], &mut tensors, quant)?;
                linear_as(&format!("{p}.mlp.up_proj"), &[inter, h], &mut tensors, quant)?;
                linear_as(&format!("{p}.mlp.down_proj"), &[h, inter], &mut tensors, quant)?;
            }
            tensors.insert(format!("{p}.input_layernorm.weight"), ones(h)?);
            tensors.insert(format!("{p}.post_attention_layernorm.weight"), ones(h)?);
            continue;
        }
        if phi3 {
            linear_as(&format!("{p}.self_attn.qkv_proj"), &[(nh + 2 * nkv) * hd, h], &mut tensors, quant)?;
        } else {
            linear_as(&format!("{p}.self_attn.q_proj"), &[nh * hd, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.self_attn.k_proj"), &[nkv * hd, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.self_attn.v_proj"), &[nkv * hd, h], &mut tensors, quant)?;
        }
        linear_as(&format!("{p}.self_attn.o_proj"), &[h, nh * hd], &mut tensors, quant)?;
        if qkv_bias {
            for (n, d) in [("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd)] {
                let b = ones(d)?.subtract(Array::from_f32(1.0))?.as_dtype(dtype)?;
                tensors.insert(format!("{p}.self_attn.{n}.bias"), b);
            }
        }
        if gpt_oss {
            // Sinks of a few units, like the trained ones, so they matter.
            let sinks = ones(nh)?.multiply(Array::from_f32(2.0))?.as_dtype(dtype)?;
            tensors.insert(format!("{p}.self_attn.sinks"), sinks);
            let mut bias = |name: String, d: i32, tensors: &mut HashMap<String, Array>| -> Result<()> {
                tensors.insert(name, ones(d)?.subtract(Array::from_f32(1.0))?.as_dtype(dtype)?);
                Ok(())
            };
            bias(format!("{p}.self_attn.o_proj.bias"), h, &mut tensors)?;
            let e = format!("{p}.mlp.experts");
            linear_as(&format!("{p}.mlp.router"), &[experts, h], &mut tensors, quant.map(|_| router_quant))?;
            bias(format!("{p}.mlp.router.bias"), experts, &mut tensors)?;
            linear_as(&format!("{e}.gate_proj"), &[experts, inter, h], &mut tensors, quant)?;
            linear_as(&format!("{e}.up_proj"), &[experts, inter, h], &mut tensors, quant)?;
            linear_as(&format!("{e}.down_proj"), &[experts, h, inter], &mut tensors, quant)?;
            for (n, d) in [("gate_proj", inter), ("up_proj", inter), ("down_proj", h)] {
                bias(format!("{e}.{n}.bias"), experts * d, &mut tensors)?;
                let b = tensors[&format!("{e}.{n}.bias")].reshape(&[experts, d])?;
                tensors.insert(format!("{e}.{n}.bias"), b);
            }
        } else if moe && !dense_only.contains(&(i as i64)) && (i + 1) % sparse_step == 0 {
            linear_as(&format!("{p}.mlp.gate"), &[experts, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.mlp.switch_mlp.gate_proj"), &[experts, moe_inter, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.mlp.switch_mlp.up_proj"), &[experts, moe_inter, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.mlp.switch_mlp.down_proj"), &[experts, h, moe_inter], &mut tensors, quant)?;
        } else if phi3 {
            linear_as(&format!("{p}.mlp.gate_up_proj"), &[2 * inter, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.mlp.down_proj"), &[h, inter], &mut tensors, quant)?;
        } else {
            linear_as(&format!("{p}.mlp.gate_proj"), &[inter, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.mlp.up_proj"), &[inter, h], &mut tensors, quant)?;
            linear_as(&format!("{p}.mlp.down_proj"), &[h, inter], &mut tensors, quant)?;
        }
        tensors.insert(format!("{p}.input_layernorm.weight"), ones(h)?);
        tensors.insert(format!("{p}.post_attention_layernorm.weight"), ones(h)?);
        if gemma {
            tensors.insert(format!("{p}.pre_feedforward_layernorm.weight"), ones(h)?);
            tensors.insert(format!("{p}.post_feedforward_layernorm.weight"), ones(h)?);
        }
        if qk_norm {
            tensors.insert(format!("{p}.self_attn.q_norm.weight"), ones(hd)?);
            tensors.insert(format!("{p}.self_attn.k_norm.weight"), ones(hd)?);
        }
    }
    if mt != "lfm2" {
        tensors.insert(format!("{root}model.norm.weight"), ones(h)?);
    }
    if !tied {
        linear_as(&format!("{root}lm_head"), &[vocab, h], &mut tensors, quant)?;
    }
    if let Some(q) = quant {
        let mut section = json!({"group_size": q.group_size, "bits": q.bits});
        if q.mode != QuantMode::Affine {
            section["mode"] = json!(q.mode.name());
        }
        if gpt_oss {
            for i in 0..layers {
                section[format!("model.layers.{i}.mlp.router")] = json!({"group_size": 64, "bits": 8});
            }
        }
        for name in &overrides {
            section[name] = json!({"group_size": 64, "bits": 8});
        }
        cfg["quantization"] = section;
    }
    cfg["architectures"] = json!([match cfg["model_type"].as_str() {
        Some("qwen3") => "Qwen3ForCausalLM",
        Some("qwen3_moe") => "Qwen3MoeForCausalLM",
        Some("qwen2") => "Qwen2ForCausalLM",
        Some("gemma3_text") => "Gemma3ForCausalLM",
        Some("phi3") => "Phi3ForCausalLM",
        Some("gpt_oss") => "GptOssForCausalLM",
        Some("qwen3_next") => "Qwen3NextForCausalLM",
        Some("lfm2") => "Lfm2ForCausalLM",
        Some("gemma4_text") => "Gemma4ForCausalLM",
        Some("qwen3_5") => "Qwen3_5ForConditionalGeneration",
        Some("qwen3_5_moe") => "Qwen3_5MoeForConditionalGeneration",
        _ => "LlamaForCausalLM",
    }]);
    cfg["torch_dtype"] = json!(crate::models::nn::layers::dtype_name(dtype));
    std::fs::create_dir_all(dst).map_err(io_err(dst))?;
    let write_json = |name: &str, v: &Value| -> Result<()> {
        let p = dst.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).map_err(io_err(&p))
    };
    write_json("config.json", &cfg)?;
    write_json("tokenizer.json", &byte_tokenizer())?;
    write_json(
        "tokenizer_config.json",
        &json!({"eos_token": "<|endoftext|>", "bos_token": null, "add_bos_token": false,
                "tokenizer_class": "PreTrainedTokenizerFast"}),
    )?;
    let bytes: u64 = tensors.values().map(|a| a.nbytes() as u64).sum();
    let meta: HashMap<String, String> = [("format".to_string(), "mlx".to_string())].into();
    let file = dst.join("model.safetensors");
    Array::save_safetensors(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(&meta), &file)
        .map_err(|e| Error::Mlx(format!("writing {}: {e}", file.display())))?;
    Ok(bytes)
}

type LinearFn<'a> = dyn FnMut(&str, &[i32], &mut HashMap<String, Array>, Option<QuantSpec>) -> Result<()> + 'a;
type OnesFn<'a> = dyn FnMut(i32) -> Result<Array> + 'a;

/// Gemma 4's tensors (`gemma4::Model`): per-layer inputs, KV-shared layers
/// without K/V, double-wide MLPs on them, the MoE block, layer scalars.
fn gemma4_tensors(
    cfg: &Value,
    quant: Option<QuantSpec>,
    tensors: &mut HashMap<String, Array>,
    linear_as: &mut LinearFn,
    ones: &mut OnesFn,
    overrides: &mut Vec<String>,
) -> Result<()> {
    let c = crate::models::arch::gemma4::Config::from_json(cfg)?;
    let (h, n, nh) = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads);
    let kinds: Vec<String> = match &c.layer_types {
        Some(k) => k.clone(),
        None => return Err(Error::InvalidArgument("synth writes Gemma 4 from explicit layer_types".into())),
    };
    let first_shared = n - c.num_kv_shared_layers;
    let hp = c.hidden_size_per_layer_input;
    if hp > 0 {
        let vpl = c.vocab_size_per_layer_input.unwrap_or(c.vocab_size);
        linear_as("model.embed_tokens_per_layer", &[vpl, n * hp], tensors, quant)?;
        linear_as("model.per_layer_model_projection", &[n * hp, h], tensors, quant)?;
        tensors.insert("model.per_layer_projection_norm.weight".into(), ones(hp)?);
    }
    for i in 0..n {
        let p = format!("model.layers.{i}");
        let full = kinds[i as usize] == "full_attention";
        let hd = if full { c.global_head_dim.unwrap_or(c.head_dim) } else { c.head_dim };
        let k_eq_v = c.attention_k_eq_v && full;
        let nkv = if k_eq_v { c.num_global_key_value_heads.unwrap_or(c.num_key_value_heads) } else { c.num_key_value_heads };
        let a = format!("{p}.self_attn");
        linear_as(&format!("{a}.q_proj"), &[nh * hd, h], tensors, quant)?;
        linear_as(&format!("{a}.o_proj"), &[h, nh * hd], tensors, quant)?;
        tensors.insert(format!("{a}.q_norm.weight"), ones(hd)?);
        if i < first_shared {
            linear_as(&format!("{a}.k_proj"), &[nkv * hd, h], tensors, quant)?;
            if !k_eq_v {
                linear_as(&format!("{a}.v_proj"), &[nkv * hd, h], tensors, quant)?;
            }
            tensors.insert(format!("{a}.k_norm.weight"), ones(hd)?);
        }
        let wide = if c.use_double_wide_mlp && i >= first_shared && c.num_kv_shared_layers > 0 { 2 } else { 1 };
        let inter = c.intermediate_size * wide;
        linear_as(&format!("{p}.mlp.gate_proj"), &[inter, h], tensors, quant)?;
        linear_as(&format!("{p}.mlp.up_proj"), &[inter, h], tensors, quant)?;
        linear_as(&format!("{p}.mlp.down_proj"), &[h, inter], tensors, quant)?;
        for norm in ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"] {
            tensors.insert(format!("{p}.{norm}.weight"), ones(h)?);
        }
        tensors.insert(format!("{p}.layer_scalar"), ones(1)?);
        if c.enable_moe_block {
            let (e, mi) = (c.num_experts.unwrap_or(0), c.moe_intermediate_size.unwrap_or(0));
            linear_as(&format!("{p}.router.proj"), &[e, h], tensors, quant.map(|_| QuantSpec::affine(64, 8)))?;
            overrides.push(format!("{p}.router.proj"));
            tensors.insert(format!("{p}.router.scale"), ones(h)?);
            tensors.insert(format!("{p}.router.per_expert_scale"), ones(e)?);
            let x = format!("{p}.experts.switch_glu");
            linear_as(&format!("{x}.gate_proj"), &[e, mi, h], tensors, quant)?;
            linear_as(&format!("{x}.up_proj"), &[e, mi, h], tensors, quant)?;
            linear_as(&format!("{x}.down_proj"), &[e, h, mi], tensors, quant)?;
            for norm in ["pre_feedforward_layernorm_2", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2"] {
                tensors.insert(format!("{p}.{norm}.weight"), ones(h)?);
            }
        }
        if hp > 0 {
            linear_as(&format!("{p}.per_layer_input_gate"), &[hp, h], tensors, quant)?;
            linear_as(&format!("{p}.per_layer_projection"), &[h, hp], tensors, quant)?;
            tensors.insert(format!("{p}.post_per_layer_input_norm.weight"), ones(h)?);
        }
    }
    Ok(())
}
