//! Finding and loading models: a .gguf file, an mlx-community / Hugging Face
//! safetensors directory, or the name of a model installed in the models dir.

use super::gguf_file::GgufHeader;
use super::weights::QuantConfig;
use super::{gguf, registry, LanguageModel, Weights};
use crate::chat::template::ChatTemplate;
use crate::chat::tokenizer::TextTokenizer;
use crate::error::{io_err, Error, Result};
use mlx_rs::{Array, Dtype};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Precision {
    /// f32 on CPU (dequantized at load), native/quantized on GPUs.
    #[default]
    Auto,
    /// Dequantize everything to f32.
    Float32,
    /// Keep the checkpoint's quantization and float type.
    Native,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Precision::Auto),
            "f32" | "float32" => Ok(Precision::Float32),
            "native" | "quantized" => Ok(Precision::Native),
            _ => Err(Error::InvalidArgument(format!("precision must be auto, f32 or native, not '{s}'"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    Safetensors,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
    pub architecture: String,
    pub parameters: u64,
    /// Quantization of the files on disk.
    pub quantization: String,
    /// What the weights are computed in after load.
    pub compute: String,
    pub size_on_disk: u64,
    pub weight_bytes: u64,
    pub context_length: usize,
}

/// Everything read from disk, before the architecture is built.
pub struct ModelParts {
    pub config: Value,
    pub weights: Weights,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<String>,
    pub format: Format,
    pub path: PathBuf,
    pub size_on_disk: u64,
}

pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: TextTokenizer,
    pub template: ChatTemplate,
    pub info: ModelInfo,
}

/// True when MLX has a GPU (Metal or CUDA) to run on.
pub fn gpu_available() -> bool {
    let mut metal = false;
    let mut cuda = false;
    unsafe {
        mlx_sys::mlx_metal_is_available(&mut metal);
        mlx_sys::mlx_cuda_is_available(&mut cuda);
    }
    metal || cuda
}

/// Resolves what the user typed: a path, or the name of an installed model.
pub fn resolve(spec: &str, models_dir: &Path) -> Result<PathBuf> {
    let p = PathBuf::from(spec);
    if p.exists() {
        return Ok(p);
    }
    let safe_name = !spec.is_empty()
        && !spec.contains("..")
        && !Path::new(spec).is_absolute()
        && !spec.starts_with('.');
    if safe_name {
        for cand in [models_dir.join(spec), models_dir.join(format!("{spec}.gguf"))] {
            if cand.exists() {
                return Ok(cand);
            }
        }
        // A Hugging Face id already in the shared cache (ours or mlx-lm's).
        if crate::hub::ids::check_repo_id(spec).is_ok() {
            if let Some(snap) = crate::hub::cache::snapshot(&hf_hub::resolve_cache_dir(), spec) {
                return Ok(snap);
            }
        }
        // A case-insensitive match on an installed model's name.
        if let Ok(entries) = std::fs::read_dir(models_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let stem = name.strip_suffix(".gguf").unwrap_or(&name);
                if stem.eq_ignore_ascii_case(spec) {
                    return Ok(e.path());
                }
            }
        }
    }
    Err(Error::ModelNotFound(format!(
        "'{spec}' is neither a file, a directory, a downloaded Hugging Face model, nor a model installed in {}",
        models_dir.display()
    )))
}

/// A directory holding exactly one .gguf (and no config.json) is that GGUF.
fn gguf_in_dir(dir: &Path) -> Option<PathBuf> {
    if dir.join("config.json").exists() {
        return None;
    }
    let ggufs = super::installed::ggufs_in(dir);
    (ggufs.len() == 1).then(|| ggufs[0].clone())
}

pub fn read_parts(path: &Path) -> Result<ModelParts> {
    if path.is_dir() {
        if let Some(g) = gguf_in_dir(path) {
            return read_gguf(&g);
        }
        return read_safetensors_dir(path);
    }
    if !path.is_file() {
        return Err(Error::ModelNotFound(path.display().to_string()));
    }
    read_gguf(path)
}

fn read_gguf(path: &Path) -> Result<ModelParts> {
    let header = GgufHeader::read(path)?;
    gguf::check_tensor_types(&header)?;
    let config = gguf::config_from_metadata(&header)?;
    let tokenizer = TextTokenizer::from_gguf(&header)?;
    let chat_template = header
        .get_str("tokenizer.chat_template")
        .map(String::from)
        .or_else(|| crate::chat::template::builtin_for(header.architecture().unwrap_or("")).map(String::from));
    let tensors = gguf::load_tensors(&header, &config)?;
    let quant = QuantConfig {
        group_size: Some(gguf::GGUF_GROUP_SIZE),
        ..Default::default()
    };
    Ok(ModelParts {
        config,
        weights: Weights::new(tensors, quant),
        tokenizer,
        chat_template,
        format: Format::Gguf,
        path: path.to_path_buf(),
        size_on_disk: header.file_len,
    })
}

/// Reads a safetensors file's header (tensor name -> dtype, shape, offsets) and
/// checks it against the file's length, so a truncated download is a clear
/// error instead of garbage weights.
pub fn safetensors_header(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let corrupt = |reason: String| Error::CorruptModel { path: path.to_path_buf(), reason };
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| corrupt("file is shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > len {
        return Err(corrupt(format!("header length {n} does not fit in a {len}-byte file")));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h).map_err(|_| corrupt("truncated header".into()))?;
    let header: Value = serde_json::from_slice(&h).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let data_len = len - 8 - n;
    let Value::Object(mut obj) = header else {
        return Err(corrupt("header is not an object".into()));
    };
    obj.remove("__metadata__");
    for (name, t) in &obj {
        let end = t["data_offsets"][1].as_u64().ok_or_else(|| corrupt(format!("tensor {name} has no offsets")))?;
        if end > data_len {
            return Err(corrupt(format!("tensor {name} extends past the end of the file: the file is truncated")));
        }
    }
    Ok(obj)
}

fn read_safetensors_dir(dir: &Path) -> Result<ModelParts> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ModelNotFound(format!("{} has no config.json or .gguf file", dir.display()))
        } else {
            io_err(&cfg_path)(e)
        }
    })?;
    let config: Value =
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
    // Unknown architectures fail here, before any weights are read.
    registry::check_supported(registry::model_type(&config)?)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::ModelNotFound(format!("{} has no model*.safetensors", dir.display())));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let idx: Value = serde_json::from_str(&std::fs::read_to_string(&index).map_err(io_err(&index))?)
            .map_err(|e| Error::Config(format!("{}: {e}", index.display())))?;
        if let Some(map) = idx["weight_map"].as_object() {
            for shard in map.values().filter_map(|v| v.as_str()) {
                if !dir.join(shard).is_file() {
                    return Err(Error::CorruptModel {
                        path: dir.to_path_buf(),
                        reason: format!("shard {shard} listed in the index is missing"),
                    });
                }
            }
        }
    }
    let mut tensors: HashMap<String, Array> = HashMap::new();
    let mut size = 0;
    for f in &files {
        safetensors_header(f)?;
        size += std::fs::metadata(f).map_err(io_err(f))?.len();
        let part = Array::load_safetensors(f).map_err(|e| Error::CorruptModel {
            path: f.clone(),
            reason: e.to_string(),
        })?;
        tensors.extend(part);
    }
    let (tokenizer, chat_template) = TextTokenizer::from_dir(dir)?;
    let quant = QuantConfig::from_config(&config)?;
    Ok(ModelParts {
        config,
        weights: Weights::new(tensors, quant),
        tokenizer,
        chat_template,
        format: Format::Safetensors,
        path: dir.to_path_buf(),
        size_on_disk: size,
    })
}

impl ModelParts {
    /// Applies the precision policy; returns a label of what the model computes in.
    pub fn apply_precision(&mut self, precision: Precision) -> Result<String> {
        let params = self.weights.param_count()?;
        let resolved = match precision {
            Precision::Auto if gpu_available() => Precision::Native,
            // f32 costs 4 bytes a parameter; keep the quantized form if that
            // would take more than half the machine's memory.
            Precision::Auto if params * 4 > crate::hub::fit::total_memory() / 2 => Precision::Native,
            Precision::Auto => Precision::Float32,
            p => p,
        };
        match resolved {
            Precision::Float32 => {
                self.weights.dequantize_all(Dtype::Float32)?;
                self.weights.cast_floats(Dtype::Float32)?;
                self.config.as_object_mut().map(|o| {
                    o.remove("quantization");
                    o.remove("quantization_config");
                });
                Ok("float32".into())
            }
            _ => {
                // Compute in the scales' float type (f16/bf16), or keep as stored.
                let dtype = self
                    .weights
                    .tensors()
                    .iter()
                    .find(|(k, _)| k.ends_with(".scales"))
                    .map(|(_, v)| v.dtype())
                    .or_else(|| self.weights.tensors().get("model.embed_tokens.weight").map(|a| a.dtype()))
                    .unwrap_or(Dtype::Float32);
                self.weights.cast_floats(dtype)?;
                Ok(super::dtype_name(dtype).to_string())
            }
        }
    }
}

pub fn display_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}

pub fn load(path: &Path, precision: Precision) -> Result<LoadedModel> {
    let mut parts = read_parts(path)?;
    let quantization = parts.weights.quantization_label();
    let parameters = parts.weights.param_count()?;
    let compute = parts.apply_precision(precision)?;
    // A broken chat template is reported at load, not on the first message.
    let template = ChatTemplate::new(parts.chat_template.clone())?;
    parts.weights.eval_all()?;
    let weight_bytes = parts.weights.nbytes() as u64;
    let model = registry::build(&parts.config, parts.weights)?;
    let arch = model.info();
    let info = ModelInfo {
        name: display_name(&parts.path),
        path: parts.path.clone(),
        format: parts.format,
        architecture: arch.architecture.clone(),
        parameters,
        quantization,
        compute,
        size_on_disk: parts.size_on_disk,
        weight_bytes,
        context_length: arch.max_position_embeddings,
    };
    Ok(LoadedModel { model, tokenizer: parts.tokenizer, template, info })
}
