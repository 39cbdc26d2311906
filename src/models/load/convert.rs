//! `hearth convert`: any model Hearth reads (GGUF or safetensors) written as an
//! MLX directory in mlx-community layout, loadable by Hearth and Python mlx-lm.

use crate::error::{io_err, Error, Result};
use crate::models::load::{read_parts, Precision};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

pub struct ConvertReport {
    pub tensors: usize,
    pub bytes: u64,
    pub compute: String,
}

/// Affine quantization applied on the way out (`--q-bits`, `--q-group-size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantize {
    pub bits: i32,
    pub group_size: i32,
}

impl Quantize {
    pub fn new(bits: i32, group_size: i32) -> Result<Self> {
        if ![4, 8].contains(&bits) || ![32, 64, 128].contains(&group_size) {
            return Err(Error::InvalidArgument(format!(
                "--q-bits must be 4 or 8 and --q-group-size 32, 64 or 128 (got {bits} and {group_size})"
            )));
        }
        Ok(Quantize { bits, group_size })
    }
}

pub fn convert(src: &Path, dst: &Path, precision: Precision) -> Result<ConvertReport> {
    convert_with(src, dst, precision, None)
}

/// Every matrix (linear layers and embeddings) whose rows split into whole
/// groups is quantized, the way mlx-lm's `convert -q` does; norms stay float.
fn quantize_weights(parts: &mut crate::models::load::ModelParts, q: Quantize) -> Result<()> {
    parts.apply_precision(Precision::Float32)?;
    let old = std::mem::replace(&mut parts.weights, crate::models::Weights::new(HashMap::new(), Default::default()));
    let (tensors, _) = old.into_parts();
    let mut out = HashMap::with_capacity(tensors.len() * 3);
    for (name, a) in tensors {
        let base = name.strip_suffix(".weight");
        match base {
            Some(base) if a.ndim() == 2 && a.shape()[1] % q.group_size == 0 => {
                let (w, s, b) = mlx_rs::ops::quantize(&a, q.group_size, q.bits)?;
                mlx_rs::transforms::eval([&w, &s, &b])?;
                out.insert(format!("{base}.weight"), w);
                out.insert(format!("{base}.scales"), s);
                out.insert(format!("{base}.biases"), b);
            }
            _ => {
                out.insert(name, a);
            }
        }
    }
    let quant = crate::models::load::weights::QuantConfig { group_size: Some(q.group_size), bits: Some(q.bits), ..Default::default() };
    parts.weights = crate::models::Weights::new(out, quant);
    Ok(())
}

pub fn convert_with(src: &Path, dst: &Path, precision: Precision, quantize: Option<Quantize>) -> Result<ConvertReport> {
    if dst.exists() && std::fs::read_dir(dst).map_err(io_err(dst))?.next().is_some() {
        return Err(Error::InvalidArgument(format!("{} exists and is not empty", dst.display())));
    }
    let mut parts = read_parts(src)?;
    // What cannot be run is not converted either.
    crate::models::registry::check_config(&parts.config)?;
    let compute = match quantize {
        Some(q) => {
            quantize_weights(&mut parts, q)?;
            format!("{}-bit (group {})", q.bits, q.group_size)
        }
        None => parts.apply_precision(match precision {
            Precision::Auto => Precision::Native,
            p => p,
        })?,
    };
    let mut config = parts.config.clone();
    // GGUF names Gemma 3's text model "gemma3"; in Hugging Face layout that is
    // the multimodal wrapper, so the text-only type is written out.
    if config["model_type"] == "gemma3" && !config["text_config"].is_object() {
        config["model_type"] = json!("gemma3_text");
        config["architectures"] = json!(["Gemma3ForCausalLM"]);
    }
    let specs = parts.weights.quant_specs()?;
    if let Some(obj) = config.as_object_mut() {
        obj.remove("quantization_config");
        if specs.is_empty() {
            obj.remove("quantization");
        } else {
            // The most common (group, bits) is the default; the rest are per-layer.
            let mut counts: HashMap<(i32, i32), usize> = HashMap::new();
            for (_, s) in &specs {
                *counts.entry((s.group_size, s.bits)).or_default() += 1;
            }
            let (&(g, b), _) = counts.iter().max_by_key(|(k, n)| (**n, k.1)).expect("non-empty");
            let mut q = json!({"group_size": g, "bits": b});
            for (p, s) in &specs {
                if (s.group_size, s.bits) != (g, b) {
                    q[p] = json!({"group_size": s.group_size, "bits": s.bits});
                }
            }
            obj.insert("quantization".into(), q);
        }
    }
    let tmp = dst.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let write_json = |name: &str, v: &Value| -> Result<()> {
        let p = tmp.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).map_err(io_err(&p))
    };
    write_json("config.json", &config)?;
    write_json("tokenizer.json", &parts.tokenizer.json)?;
    let tok = &parts.tokenizer;
    let mut tcfg = json!({
        "add_bos_token": tok.add_bos,
        "add_eos_token": false,
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(t) = &parts.chat_template {
        tcfg["chat_template"] = json!(t);
    }
    write_json("tokenizer_config.json", &tcfg)?;
    if !tok.eos_ids.is_empty() {
        write_json("generation_config.json", &json!({"eos_token_id": tok.eos_ids}))?;
    }
    let tensors = parts.weights.tensors();
    let bytes = parts.weights.nbytes() as u64;
    let meta: HashMap<String, String> = [("format".to_string(), "mlx".to_string())].into();
    let file = tmp.join("model.safetensors");
    mlx_rs::Array::save_safetensors(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(&meta), &file)
        .map_err(|e| Error::Mlx(format!("writing {}: {e}", file.display())))?;
    let index = json!({
        "metadata": {"total_size": bytes},
        "weight_map": tensors.keys().map(|k| (k.clone(), json!("model.safetensors"))).collect::<serde_json::Map<_, _>>(),
    });
    write_json("model.safetensors.index.json", &index)?;
    if dst.exists() {
        std::fs::remove_dir(dst).map_err(io_err(dst))?;
    }
    std::fs::rename(&tmp, dst).map_err(io_err(dst))?;
    Ok(ConvertReport { tensors: tensors.len(), bytes, compute })
}
