//! Maps `model_type` (config.json) / `general.architecture` (GGUF) to an implementation.

use crate::models::arch::{gemma3, gemma4, gpt_oss, lfm2, llama, ministral3, phi3, qwen2, qwen3, qwen3_moe, qwen3_next};
use crate::models::{LanguageModel, Weights};
use crate::error::{Error, Result};
use serde_json::Value;

/// One architecture Hearth implements: the `model_type` aliases that share
/// it, its config checked without weights (returning the context length),
/// and the model built from config and weights.
struct Arch {
    name: &'static str,
    aliases: &'static [&'static str],
    check: fn(&Value) -> Result<i32>,
    build: fn(&Value, Weights) -> Result<Box<dyn LanguageModel>>,
    /// Whether its quantized projections take the batched 4-bit kernel at 2-7
    /// rows (`kernels::quantized_matmul_rows`), chosen per family from side-by-side
    /// runs (H200, docs/PERFORMANCE.md): on for the dense families (Llama-3.1-8B
    /// shape, 4 streams 409.5 tok/s against 200.3 without); off for the MoE ones
    /// (Qwen3-30B-A3B, 4 streams 203 and 171 with it against 277 and 247 without;
    /// gpt-oss and Qwen3-Next by the same structure, not measured).
    few_rows_kernel: bool,
}

fn parse<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T> {
    serde_json::from_value(config.clone()).map_err(|e| Error::Config(format!("config.json: {e}")))
}

/// A llama-shaped config, checked (Phi-3's LongRoPE block is checked by
/// `phi3::load`; its sizes are llama's).
fn llama_like(config: &Value) -> Result<i32> {
    let mut plain = config.clone();
    if plain["model_type"] == "phi3" {
        plain.as_object_mut().map(|o| o.remove("rope_scaling"));
    }
    let c: llama::Config = parse(&plain)?;
    c.validate()?;
    Ok(c.max_position_embeddings)
}

/// Every architecture, one entry each.
const ARCHES: &[Arch] = &[
    Arch {
        name: "llama",
        aliases: &["llama", "mistral", "smollm3"],
        check: llama_like,
        build: |c, w| Ok(Box::new(llama::Model::load(parse(c)?, w)?)),
        few_rows_kernel: true,
    },
    Arch { name: "qwen2", aliases: &["qwen2"], check: llama_like, build: |c, w| Ok(Box::new(qwen2::load(parse(c)?, w)?)), few_rows_kernel: true },
    Arch { name: "qwen3", aliases: &["qwen3"], check: llama_like, build: |c, w| Ok(Box::new(qwen3::load(parse(c)?, w)?)), few_rows_kernel: true },
    Arch {
        name: "qwen3_moe",
        aliases: &["qwen3_moe", "qwen3moe"],
        check: |c| {
            let c: qwen3_moe::Config = parse(c)?;
            c.validate()?;
            Ok(c.base.max_position_embeddings)
        },
        build: |c, w| Ok(Box::new(qwen3_moe::Model::load(parse(c)?, w)?)),
        few_rows_kernel: false,
    },
    Arch {
        name: "gpt_oss",
        aliases: &["gpt_oss", "gpt-oss"],
        check: |c| {
            let c: gpt_oss::Config = parse(c)?;
            c.validate()?;
            Ok(c.base.max_position_embeddings)
        },
        build: |c, w| Ok(Box::new(gpt_oss::Model::load(parse(c)?, w)?)),
        few_rows_kernel: false,
    },
    Arch {
        name: "gemma4",
        aliases: &["gemma4_text", "gemma4"],
        check: |c| Ok(gemma4::Config::from_json(c)?.max_position_embeddings),
        build: |c, w| Ok(Box::new(gemma4::Model::load(gemma4::Config::from_json(c)?, w)?)),
        few_rows_kernel: true,
    },
    Arch {
        name: "lfm2",
        aliases: &["lfm2"],
        check: |c| {
            let c: lfm2::Config = parse(c)?;
            c.validate()?;
            Ok(c.max_position_embeddings)
        },
        build: |c, w| Ok(Box::new(lfm2::Model::load(parse(c)?, w)?)),
        few_rows_kernel: true,
    },
    Arch {
        name: "ministral3",
        aliases: &["ministral3", "mistral3"],
        check: |c| Ok(ministral3::Config::from_json(c)?.max_position_embeddings),
        build: |c, w| Ok(Box::new(ministral3::Model::load(ministral3::Config::from_json(c)?, w)?)),
        few_rows_kernel: true,
    },
    Arch {
        name: "qwen3_next",
        aliases: &["qwen3_next", "qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"],
        check: |c| Ok(qwen3_next::Config::from_json(c)?.max_position_embeddings),
        build: |c, w| Ok(Box::new(qwen3_next::Model::load(qwen3_next::Config::from_json(c)?, w)?)),
        few_rows_kernel: false,
    },
    Arch {
        name: "gemma3",
        aliases: &["gemma3_text", "gemma3"],
        // Multimodal configs nest the language model under text_config.
        check: |c| {
            let c: gemma3::Config = parse(crate::models::text_config(c))?;
            c.validate()?;
            Ok(c.max_position_embeddings)
        },
        build: |c, w| Ok(Box::new(gemma3::Model::load(parse(crate::models::text_config(c))?, w)?)),
        few_rows_kernel: true,
    },
    Arch { name: "phi3", aliases: &["phi3"], check: llama_like, build: |c, w| Ok(Box::new(phi3::load(c, w)?)), few_rows_kernel: true },
];

fn arch(model_type: &str) -> Result<&'static Arch> {
    ARCHES
        .iter()
        .find(|a| a.aliases.contains(&model_type))
        .ok_or_else(|| Error::UnknownArchitecture(model_type.to_string(), supported_list()))
}

fn supported_list() -> String {
    ARCHES
        .iter()
        .flat_map(|a| a.aliases.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn check_supported(model_type: &str) -> Result<&'static str> {
    Ok(arch(model_type)?.name)
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
    let arch = arch(model_type(config)?)?;
    // Name the field when a size does not even fit the integer it is read into.
    let sizes = crate::models::text_config(config);
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
    let context = (arch.check)(config)?;
    if context < MIN_CONTEXT {
        return Err(Error::Config(format!(
            "the model's context length is {context} tokens (max_position_embeddings); Hearth needs at least {MIN_CONTEXT}"
        )));
    }
    Ok(())
}

pub fn build(config: &Value, mut weights: Weights) -> Result<Box<dyn LanguageModel>> {
    check_config(config)?;
    let arch = arch(model_type(config)?)?;
    weights.set_few_rows_kernel(arch.few_rows_kernel);
    (arch.build)(config, weights)
}
