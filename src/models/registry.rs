//! Maps `model_type` (config.json) / `general.architecture` (GGUF) to an implementation.

use super::{gemma3, llama, phi3, qwen2, qwen3, LanguageModel, Weights};
use crate::error::{Error, Result};
use serde_json::Value;

/// Architectures Hearth implements, with the model_type aliases that share them.
const ARCHES: &[(&str, &[&str])] = &[
    ("llama", &["llama", "mistral"]),
    ("qwen2", &["qwen2"]),
    ("qwen3", &["qwen3"]),
    ("gemma3", &["gemma3_text", "gemma3"]),
    ("phi3", &["phi3"]),
];

fn supported_list() -> String {
    ARCHES
        .iter()
        .flat_map(|(_, a)| a.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn check_supported(model_type: &str) -> Result<&'static str> {
    ARCHES
        .iter()
        .find(|(_, aliases)| aliases.contains(&model_type))
        .map(|(name, _)| *name)
        .ok_or_else(|| Error::UnknownArchitecture(model_type.to_string(), supported_list()))
}

pub fn model_type(config: &Value) -> Result<&str> {
    config["model_type"]
        .as_str()
        .ok_or_else(|| Error::Config("config.json has no model_type".into()))
}

pub fn build(config: &Value, weights: Weights) -> Result<Box<dyn LanguageModel>> {
    let arch = check_supported(model_type(config)?)?;
    let parse = |e: serde_json::Error| Error::Config(format!("config.json: {e}"));
    let c = || -> Result<llama::Config> { serde_json::from_value(config.clone()).map_err(parse) };
    match arch {
        "llama" => Ok(Box::new(llama::Model::load(c()?, weights)?)),
        "qwen2" => Ok(Box::new(qwen2::load(c()?, weights)?)),
        "qwen3" => Ok(Box::new(qwen3::load(c()?, weights)?)),
        "phi3" => Ok(Box::new(phi3::load(config, weights)?)),
        "gemma3" => {
            // Multimodal configs nest the language model under text_config.
            let cfg = if config["text_config"].is_object() { &config["text_config"] } else { config };
            let c: gemma3::Config = serde_json::from_value(cfg.clone()).map_err(parse)?;
            Ok(Box::new(gemma3::Model::load(c, weights)?))
        }
        _ => unreachable!("check_supported only returns listed architectures"),
    }
}
