//! What the model manager shows of a model that is not loaded: architecture,
//! parameter count, quantization and the shape for the fit estimate, read from
//! file headers only (no weights).

use crate::error::{io_err, Error, Result};
use crate::formats::gguf_header::GgufHeader;
use crate::formats::{gguf, safetensors};
use crate::models::load::fit::Shape;
use std::path::Path;

/// What the model manager shows for a model that is not loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    /// For the memory-fit estimate; None when the config lacks the numbers.
    pub shape: Option<Shape>,
}

/// Architecture, parameter count and quantization from headers only.
pub fn card(path: &Path) -> Result<ModelCard> {
    let gguf = if path.is_file() {
        Some(path.to_path_buf())
    } else if !path.join("config.json").is_file() {
        gguf::files_in(path).into_iter().next()
    } else {
        None
    };
    if let Some(g) = gguf {
        let h = GgufHeader::read(&g)?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for t in &h.tensors {
            *counts.entry(t.type_name()).or_default() += t.n_elements();
        }
        let quantization = counts.iter().max_by_key(|(_, n)| **n).map(|(k, _)| k.clone()).unwrap_or_default();
        let parameters = h.tensors.iter().map(|t| t.n_elements()).sum();
        let mut shape = gguf::config_from_metadata(&h).ok().and_then(|c| Shape::from_config(&c, parameters));
        if let Some(s) = shape.as_mut() {
            // GGUF blocks hold 4 to 8 bits a weight; count the common 4-bit case.
            s.bits = Some(4);
        }
        return Ok(ModelCard { architecture: h.architecture()?.to_string(), parameters, quantization, shape });
    }
    let cfg_path = path.join("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&crate::files::read_text(&cfg_path, 16 << 20)?)
        .map_err(|e| Error::Config(format!("config.json: {e}")))?;
    let q = if cfg["quantization"].is_object() { &cfg["quantization"] } else { &cfg["quantization_config"] };
    let bits = q["bits"].as_u64();
    let mut parameters = 0u64;
    for e in std::fs::read_dir(path).map_err(io_err(path))?.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        for (name, dtype, n) in safetensors::tensor_sizes(&p)? {
            if name.ends_with(".scales") || name.ends_with(".biases") {
                continue;
            }
            // Packed quantized weights hold 32/bits values per uint32.
            parameters += match (dtype.as_str(), bits) {
                ("U32", Some(b)) if b > 0 => n * 32 / b,
                _ => n,
            };
        }
    }
    Ok(ModelCard {
        architecture: cfg["model_type"].as_str().unwrap_or("unknown").to_string(),
        shape: Shape::from_config(&cfg, parameters),
        parameters,
        quantization: match bits {
            Some(b) => format!("{b}-bit (group {})", q["group_size"].as_u64().unwrap_or(64)),
            None => cfg["torch_dtype"].as_str().unwrap_or("float").to_string(),
        },
    })
}

