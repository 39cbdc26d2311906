//! Maps `model_type` (config.json) / `general.architecture` (GGUF) to an implementation.

use super::{llama, LanguageModel, Weights};
use crate::error::{Error, Result};
use serde_json::Value;

/// Architectures Hearth implements, with the model_type aliases that share them.
const ARCHES: &[(&str, &[&str])] = &[("llama", &["llama", "mistral"])];

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
    match arch {
        "llama" => {
            let c: llama::Config = serde_json::from_value(config.clone()).map_err(parse)?;
            Ok(Box::new(llama::Model::load(c, weights)?))
        }
        _ => unreachable!("check_supported only returns listed architectures"),
    }
}
