//! Maps `model_type` (config.json) / `general.architecture` (GGUF) to an implementation.

use super::{gemma3, gemma4, gpt_oss, lfm2, llama, ministral3, phi3, qwen2, qwen3, qwen3_moe, qwen3_next, LanguageModel, Weights};
use crate::error::{Error, Result};
use serde_json::Value;

/// Architectures Hearth implements, with the model_type aliases that share them.
const ARCHES: &[(&str, &[&str])] = &[
    ("llama", &["llama", "mistral", "smollm3"]),
    ("qwen2", &["qwen2"]),
    ("qwen3", &["qwen3"]),
    ("qwen3_moe", &["qwen3_moe", "qwen3moe"]),
    ("gpt_oss", &["gpt_oss", "gpt-oss"]),
    ("gemma4", &["gemma4_text", "gemma4"]),
    ("lfm2", &["lfm2"]),
    ("ministral3", &["ministral3", "mistral3"]),
    ("qwen3_next", &["qwen3_next", "qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"]),
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

/// The smallest context a model may declare (a chat template alone takes more).
const MIN_CONTEXT: i32 = 16;

/// Checks config.json for the architecture it names, without any weights:
/// every size in range before anything divides by it or allocates with it.
/// `build` runs it too; `hearth convert` runs it alone.
pub fn check_config(config: &Value) -> Result<()> {
    let arch = check_supported(model_type(config)?)?;
    let parse = |e: serde_json::Error| Error::Config(format!("config.json: {e}"));
    // Name the field when a size does not even fit the integer it is read into.
    let sizes = super::text_config(config);
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
        "sliding_window",
    ] {
        let v = &sizes[key];
        if v.is_number() && v.as_i64().is_none_or(|n| i32::try_from(n).is_err()) {
            return Err(Error::Config(format!("{key} is {v}, beyond any model's size")));
        }
    }
    let context = if arch == "gemma4" {
        gemma4::Config::from_json(config)?.max_position_embeddings
    } else if arch == "ministral3" {
        ministral3::Config::from_json(config)?.max_position_embeddings
    } else if arch == "lfm2" {
        let c: lfm2::Config = serde_json::from_value(config.clone()).map_err(parse)?;
        c.validate()?;
        c.max_position_embeddings
    } else if arch == "qwen3_next" {
        qwen3_next::Config::from_json(config)?.max_position_embeddings
    } else if arch == "gpt_oss" {
        let c: gpt_oss::Config = serde_json::from_value(config.clone()).map_err(parse)?;
        c.validate()?;
        c.base.max_position_embeddings
    } else if arch == "qwen3_moe" {
        let c: qwen3_moe::Config = serde_json::from_value(config.clone()).map_err(parse)?;
        c.validate()?;
        c.base.max_position_embeddings
    } else if arch == "gemma3" {
        let cfg = super::text_config(config);
        let c: gemma3::Config = serde_json::from_value(cfg.clone()).map_err(parse)?;
        c.validate()?;
        c.max_position_embeddings
    } else {
        let mut plain = config.clone();
        // Phi-3's LongRoPE block is checked by phi3::load; the sizes are llama's.
        if arch == "phi3" {
            plain.as_object_mut().map(|o| o.remove("rope_scaling"));
        }
        let c: llama::Config = serde_json::from_value(plain).map_err(parse)?;
        c.validate()?;
        c.max_position_embeddings
    };
    if context < MIN_CONTEXT {
        return Err(Error::Config(format!(
            "the model's context length is {context} tokens (max_position_embeddings); Hearth needs at least {MIN_CONTEXT}"
        )));
    }
    Ok(())
}

pub fn build(config: &Value, weights: Weights) -> Result<Box<dyn LanguageModel>> {
    check_config(config)?;
    let arch = check_supported(model_type(config)?)?;
    let parse = |e: serde_json::Error| Error::Config(format!("config.json: {e}"));
    let c = || -> Result<llama::Config> { serde_json::from_value(config.clone()).map_err(parse) };
    match arch {
        "llama" => Ok(Box::new(llama::Model::load(c()?, weights)?)),
        "qwen2" => Ok(Box::new(qwen2::load(c()?, weights)?)),
        "qwen3" => Ok(Box::new(qwen3::load(c()?, weights)?)),
        "qwen3_moe" => {
            let c: qwen3_moe::Config = serde_json::from_value(config.clone()).map_err(parse)?;
            Ok(Box::new(qwen3_moe::Model::load(c, weights)?))
        }
        "gpt_oss" => {
            let c: gpt_oss::Config = serde_json::from_value(config.clone()).map_err(parse)?;
            Ok(Box::new(gpt_oss::Model::load(c, weights)?))
        }
        "qwen3_next" => Ok(Box::new(qwen3_next::Model::load(qwen3_next::Config::from_json(config)?, weights)?)),
        "gemma4" => Ok(Box::new(gemma4::Model::load(gemma4::Config::from_json(config)?, weights)?)),
        "ministral3" => Ok(Box::new(ministral3::Model::load(ministral3::Config::from_json(config)?, weights)?)),
        "lfm2" => {
            let c: lfm2::Config = serde_json::from_value(config.clone()).map_err(parse)?;
            Ok(Box::new(lfm2::Model::load(c, weights)?))
        }
        "phi3" => Ok(Box::new(phi3::load(config, weights)?)),
        "gemma3" => {
            // Multimodal configs nest the language model under text_config.
            let cfg = super::text_config(config);
            let c: gemma3::Config = serde_json::from_value(cfg.clone()).map_err(parse)?;
            Ok(Box::new(gemma3::Model::load(c, weights)?))
        }
        _ => unreachable!("check_supported only returns listed architectures"),
    }
}
