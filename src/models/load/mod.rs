//! Loading a model from a path: a .gguf file, or an mlx-community / Hugging
//! Face safetensors folder. Files are read through `formats`, the tokenizer and
//! template through `chat`, and the architecture is built by `registry`.
//! Turning a name into a path is `library::resolve`'s job.

pub mod convert;
pub mod fit;
pub mod weights;

use crate::models::load::weights::QuantConfig;
use crate::models::{registry, LanguageModel, Weights};
use crate::chat::params::RecommendedSampling;
use crate::chat::template::ChatTemplate;
use crate::chat::tokenizer::TextTokenizer;
use crate::error::{io_err, Error, Result};
use crate::formats::gguf_header::GgufHeader;
use crate::formats::{gguf, safetensors};
use mlx_rs::{Array, Dtype};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Reports a load's progress: `(fraction 0..=1, what is happening)`.
pub type OnProgress<'a> = &'a mut dyn FnMut(f32, &str);

/// Where each stage of a load sits on the progress bar. Reading tensors is
/// counted in bytes read of the file's tensor bytes; preparing them (dequantize,
/// cast, evaluate) in tensors done.
const READ: (f32, f32) = (0.0, 0.6);
const PREPARE: (f32, f32) = (0.6, 0.97);

fn stage<'a>(on: OnProgress<'a>, (from, to): (f32, f32), message: &'a str) -> impl FnMut(u64, u64) + 'a {
    move |done, total| {
        let f = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) as f32 };
        on(from + (to - from) * f, message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    Safetensors,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Sampling values the model's authors recommend (shown, and used where
    /// the user kept Hearth's defaults).
    pub recommended: RecommendedSampling,
    /// The chat template takes `reasoning_effort` (gpt-oss): the app offers
    /// the Low/Medium/High choice.
    pub takes_reasoning_effort: bool,
    /// The chat template takes `enable_thinking` (Qwen3, Qwen3.5, SmolLM3):
    /// the app offers a thinking on/off toggle per conversation.
    #[serde(default)]
    pub takes_thinking_toggle: bool,
    /// How tool calls appear in the model's text (what the server parses).
    #[serde(default)]
    pub tool_format: crate::chat::tools::ToolFormat,
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
    pub recommended: RecommendedSampling,
}

pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: TextTokenizer,
    pub template: ChatTemplate,
    pub info: ModelInfo,
}

/// The GGUF's own template, or Hearth's built-in one for families whose GGUF
/// files usually ship none.
fn gguf_template(h: &GgufHeader) -> Option<String> {
    h.get_str("tokenizer.chat_template")
        .map(String::from)
        .or_else(|| crate::chat::template::builtin_for(h.architecture().unwrap_or("")).map(String::from))
}

/// llama.cpp's `general.sampling.*` keys, where a GGUF carries them.
fn gguf_sampling(h: &GgufHeader) -> RecommendedSampling {
    let f = |k: &str| h.get_f64(&format!("general.sampling.{k}")).map(|x| x as f32).filter(|x| x.is_finite());
    RecommendedSampling {
        temperature: f("temp"),
        top_p: f("top_p"),
        top_k: h.get_u64("general.sampling.top_k").map(|k| k as usize),
        min_p: f("min_p"),
        repetition_penalty: f("penalty_repeat"),
    }
    .valid()
}

/// A directory holding exactly one .gguf (and no config.json) is that GGUF.
fn gguf_in_dir(dir: &Path) -> Option<PathBuf> {
    if dir.join("config.json").exists() {
        return None;
    }
    let ggufs = gguf::files_in(dir);
    (ggufs.len() == 1).then(|| ggufs[0].clone())
}

/// Only what turns messages into tokens: the tokenizer and the chat template
/// (built-in for GGUF families that ship none), without reading any weights.
pub fn read_chat_parts(path: &Path) -> Result<(TextTokenizer, ChatTemplate)> {
    let gguf = if path.is_dir() { gguf_in_dir(path) } else { Some(path.to_path_buf()) };
    let (tokenizer, template) = match gguf {
        Some(g) => {
            let header = GgufHeader::read(&g)?;
            (TextTokenizer::from_gguf(&header)?, gguf_template(&header))
        }
        None => TextTokenizer::from_dir(path)?,
    };
    Ok((tokenizer, ChatTemplate::new(template)?))
}

pub fn read_parts(path: &Path) -> Result<ModelParts> {
    read_parts_with_progress(path, &mut |_, _| {})
}

pub fn read_parts_with_progress(path: &Path, on: OnProgress) -> Result<ModelParts> {
    if path.is_dir() {
        if let Some(g) = gguf_in_dir(path) {
            return read_gguf(&g, on);
        }
        return read_safetensors_dir(path, on);
    }
    if !path.exists() {
        return Err(Error::ModelNotFound(format!("no model found at {}", path.display())));
    }
    // A FIFO, socket or device is an error naming it (`GgufHeader::read`
    // opens through `files::open_regular`).
    read_gguf(path, on)
}

fn read_gguf(path: &Path, on: OnProgress) -> Result<ModelParts> {
    let header = GgufHeader::read(path)?;
    gguf::check_tensor_types(&header)?;
    // Unknown architectures fail here, before any weights are read.
    registry::check_supported(header.architecture()?)?;
    let config = gguf::config_from_metadata(&header)?;
    let tokenizer = TextTokenizer::from_gguf(&header)?;
    let chat_template = gguf_template(&header);
    let recommended = gguf_sampling(&header);
    let tensors = gguf::load_tensors(&header, &config, &mut stage(on, READ, "Reading tensors"))?;
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
        recommended,
    })
}

fn read_safetensors_dir(dir: &Path, on: OnProgress) -> Result<ModelParts> {
    let cfg_path = dir.join("config.json");
    let text = crate::files::read_small_text(&cfg_path, 16 << 20)?
        .ok_or_else(|| Error::ModelNotFound(format!("{} has no config.json or .gguf file", dir.display())))?;
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
    // A FIFO or device named like a shard would block the reader: an error naming it.
    for f in &files {
        crate::files::require_regular(f)?;
    }
    if files.is_empty() {
        return Err(Error::ModelNotFound(format!("{} has no model*.safetensors", dir.display())));
    }
    let index = dir.join("model.safetensors.index.json");
    if let Some(text) = crate::files::read_small_text(&index, 64 << 20)? {
        let idx: Value = serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", index.display())))?;
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
    let mut total = 0;
    for f in &files {
        total += std::fs::metadata(f).map_err(io_err(f))?.len();
    }
    // MLX maps shards lazily: the bytes are read when the tensors are evaluated
    // (the prepare stage), so this stage counts shards opened.
    let mut report = stage(on, READ, "Opening weight files");
    let mut size = 0;
    for f in &files {
        safetensors::header(f)?;
        size += std::fs::metadata(f).map_err(io_err(f))?.len();
        report(size, total);
        let part = Array::load_safetensors(f).map_err(|e| Error::CorruptModel {
            path: f.clone(),
            reason: e.to_string(),
        })?;
        tensors.extend(part);
    }
    let (tokenizer, chat_template) = TextTokenizer::from_dir(dir)?;
    let recommended = match crate::files::read_small(&dir.join("generation_config.json"), 1 << 20) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(|v: Value| RecommendedSampling::from_generation_config(&v))
            .unwrap_or_default(),
        _ => RecommendedSampling::default(),
    };
    let quant = QuantConfig::from_config(&config)?;
    Ok(ModelParts {
        config,
        weights: Weights::new(tensors, quant),
        tokenizer,
        chat_template,
        format: Format::Safetensors,
        path: dir.to_path_buf(),
        size_on_disk: size,
        recommended,
    })
}

impl ModelParts {
    /// Applies the precision policy; returns a label of what the model computes in.
    pub fn apply_precision(&mut self, precision: Precision) -> Result<String> {
        self.apply_precision_with_progress(precision, &mut |_, _| {})
    }

    /// As `apply_precision`, reporting `(tensors done, tensors)` while dequantizing.
    pub fn apply_precision_with_progress(&mut self, precision: Precision, on: &mut dyn FnMut(u64, u64)) -> Result<String> {
        let params = self.weights.param_count()?;
        let resolved = match precision {
            Precision::Auto if crate::sys::gpu_available() => Precision::Native,
            // f32 costs 4 bytes a parameter; keep the quantized form if that
            // would take more than half the machine's memory.
            Precision::Auto if params * 4 > crate::sys::total_memory() / 2 => Precision::Native,
            Precision::Auto => Precision::Float32,
            p => p,
        };
        match resolved {
            Precision::Float32 => {
                self.weights.dequantize_all(Dtype::Float32, on)?;
                self.weights.cast_floats(Dtype::Float32)?;
                if let Some(o) = self.config.as_object_mut() {
                    o.remove("quantization");
                    o.remove("quantization_config");
                }
                Ok("float32".into())
            }
            _ => {
                // Compute in the affine scales' float type (f16/bf16), or keep
                // as stored. MXFP4 scales are uint8 exponents, never a compute
                // type; the final norm's type stands in when only those exist.
                let is_float = |d: &Dtype| matches!(d, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16);
                let t = self.weights.tensors();
                let mut affine: Vec<(&String, Dtype)> =
                    t.iter().filter(|(k, v)| k.ends_with(".scales") && is_float(&v.dtype())).map(|(k, v)| (k, v.dtype())).collect();
                affine.sort_by(|a, b| a.0.cmp(b.0));
                let dtype = affine
                    .first()
                    .map(|(_, d)| *d)
                    .or_else(|| ["model.embed_tokens.weight", "model.norm.weight"].iter().find_map(|k| t.get(*k).map(|a| a.dtype()).filter(is_float)))
                    .unwrap_or(Dtype::Float32);
                self.weights.cast_floats(dtype)?;
                Ok(crate::models::nn::layers::dtype_name(dtype).to_string())
            }
        }
    }
}

/// A model's name as the model manager shows it (file name without `.gguf`).
pub fn display_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}


pub fn load(path: &Path, precision: Precision) -> Result<LoadedModel> {
    load_with_progress(path, precision, &mut |_, _| {})
}

/// Loads a model, reporting progress through `on` as it goes.
pub fn load_with_progress(path: &Path, precision: Precision, on: OnProgress) -> Result<LoadedModel> {
    let mut parts = read_parts_with_progress(path, on)?;
    let quantization = parts.weights.quantization_label();
    let parameters = parts.weights.param_count()?;
    let (from, to) = PREPARE;
    let mid = from + (to - from) / 2.0;
    let compute = parts.apply_precision_with_progress(precision, &mut stage(on, (from, mid), "Preparing weights"))?;
    // A broken chat template is reported at load, not on the first message.
    let template = ChatTemplate::new(parts.chat_template.clone())?;
    parts.weights.eval_all(&mut stage(on, (mid, to), "Preparing weights"))?;
    let weight_bytes = parts.weights.nbytes() as u64;
    on(to, "Building the model");
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
        recommended: parts.recommended.clone(),
        takes_reasoning_effort: template.source.contains("reasoning_effort"),
        takes_thinking_toggle: template.source.contains("enable_thinking"),
        tool_format: template.call_markup.reader(),
    };
    Ok(LoadedModel { model, tokenizer: parts.tokenizer, template, info })
}
