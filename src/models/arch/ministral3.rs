//! Ministral 3 (and the text part of Mistral 3 checkpoints, `mistral3` with a
//! `ministral3` text_config): the llama decoder with YaRN RoPE from
//! `rope_parameters`, Llama 4's long-context query scaling
//! (`llama_4_scaling_beta`), and optional sliding-window layers per
//! `layer_types`. Multimodal checkpoints keep the language model under
//! `language_model.` (MLX) or `model.language_model.` (Hugging Face); the
//! vision tower and projector are skipped.

use crate::models::nn::attention::{layer_kv, Attention, AttentionSpec, LayerMasks, PositionScale};
use crate::models::cache::Cache;
use crate::models::nn::layers::output;
use crate::models::arch::llama::Mlp;
use crate::models::nn::rope::{Rope, RopeScaling};
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::{Error, Result};
use mlx_rs::Array;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub model_type: String,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub intermediate_size: i32,
    pub num_attention_heads: i32,
    #[serde(default)]
    pub num_key_value_heads: Option<i32>,
    #[serde(default)]
    pub head_dim: Option<i32>,
    pub vocab_size: i32,
    #[serde(default = "eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "ctx")]
    pub max_position_embeddings: i32,
    pub rope_parameters: Value,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub sliding_window: Option<i32>,
}

fn eps() -> f32 {
    1e-5
}
fn ctx() -> i32 {
    262144
}
fn yes() -> bool {
    true
}

impl Config {
    /// The text config: nested under `text_config` in Mistral 3 checkpoints
    /// (whose head is untied unless they say otherwise, as mlx-lm reads them).
    pub fn from_json(config: &Value) -> Result<Self> {
        let nested = config["text_config"].is_object();
        let mut text = crate::models::text_config(config).clone();
        if nested {
            if let Some(mt) = text["model_type"].as_str().filter(|m| *m != "ministral3") {
                return Err(Error::UnknownArchitecture(format!("mistral3 with a {mt} text model"), "ministral3".into()));
            }
            if text["tie_word_embeddings"].is_null() {
                text["tie_word_embeddings"] = Value::Bool(false);
            }
            if !text["model_type"].is_string() {
                text["model_type"] = Value::from("ministral3");
            }
        }
        let c: Config = serde_json::from_value(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> i32 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn rope_f(&self, key: &str) -> Result<f32> {
        self.rope_parameters[key]
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| cfg_err(format!("rope_parameters.{key} is missing or not a number")))
    }

    fn sliding(&self, i: usize) -> bool {
        self.layer_types.as_ref().is_some_and(|k| k[i] == "sliding_attention")
    }

    pub fn validate(&self) -> Result<()> {
        crate::models::Sizes {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_dim: self.head_dim,
            vocab: self.vocab_size,
        }
        .check()?;
        for key in ["rope_theta", "llama_4_scaling_beta", "original_max_position_embeddings"] {
            self.rope_f(key)?;
        }
        if self.rope_f("original_max_position_embeddings")? < 1.0 {
            return Err(cfg_err("rope_parameters.original_max_position_embeddings must be at least 1"));
        }
        if let Some(kinds) = &self.layer_types {
            if kinds.len() != self.num_hidden_layers as usize {
                return Err(cfg_err(format!("layer_types has {} entries for {} layers", kinds.len(), self.num_hidden_layers)));
            }
            for (i, k) in kinds.iter().enumerate() {
                match k.as_str() {
                    "full_attention" => {}
                    "sliding_attention" if self.sliding_window.is_some_and(|w| w >= 1) => {}
                    "sliding_attention" => return Err(cfg_err(format!("layer_types[{i}] is sliding_attention but sliding_window is not set"))),
                    other => return Err(cfg_err(format!("layer_types[{i}] is '{other}'"))),
                }
            }
        }
        Ok(())
    }
}

struct Block {
    sliding: bool,
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

pub struct Model {
    config: Config,
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    rope: Rope,
}

impl Model {
    pub fn load(config: Config, w: Weights) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let mut w = w.text_model_only("");
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        let hd = c.head_dim();
        let spec = AttentionSpec {
            hidden: h,
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim: hd,
            qkv_bias: false,
            o_bias: false,
            qk_norm: None,
            scale: (hd as f32).powf(-0.5),
            sinks: false,
            position_scale: Some(PositionScale {
                beta: c.rope_f("llama_4_scaling_beta")?,
                original_max: c.rope_f("original_max_position_embeddings")?,
            }),
            fused_decode: false,
        };
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, h)?;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                sliding: c.sliding(i as usize),
                self_attn: Attention::load(&mut w, &format!("{p}.self_attn"), spec)?,
                mlp: Mlp::new(&mut w, &format!("{p}.mlp"), h, c.intermediate_size, false)?,
                input_layernorm: RmsNorm::load(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
                post_attention_layernorm: RmsNorm::load(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
            });
        }
        let norm = RmsNorm::load(&mut w, "model.norm", h, eps)?;
        let lm_head = if c.tie_word_embeddings {
            let _ = w.take("lm_head.weight");
            None
        } else {
            Some(Linear::load(&mut w, "lm_head", c.vocab_size, h, false)?)
        };
        let scaling: Option<RopeScaling> = serde_json::from_value(c.rope_parameters.clone()).ok();
        let scaling = scaling.filter(|s| !matches!(s.rope_type.as_deref(), Some("default") | None));
        let rope = Rope::new(hd, c.rope_f("rope_theta")?, scaling.as_ref())?;
        w.finish(&["rotary_emb.inv_freq", "activation_scale"])?;
        Ok(Model { config, embed_tokens, layers, norm, lm_head, rope })
    }
}

impl Model {
    /// The decoder over a batch: `ctx.rows[b]` holds row b's caches.
    fn run(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        let rows = &mut *ctx.rows;
        let (_, l) = input.dims()?;
        let mut h = input.embed(self.config.hidden_size, |t| self.embed_tokens.forward(t))?;
        // One mask per kind of layer and row, built once per pass (each row
        // must hold a cache per layer).
        let sliding: Vec<bool> = self.layers.iter().map(|x| x.sliding).collect();
        let masks = LayerMasks::build_rows(l, &sliding, rows)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = LayerMasks::of_rows(&masks, layer.sliding)?;
            let a = layer.self_attn.forward_rows(&layer.input_layernorm.forward(&h)?, &mut layer_kv(rows, i)?, &self.rope, &mask)?;
            h = h.add(a)?;
            let m = layer.mlp.forward(&layer.post_attention_layernorm.forward(&h)?)?;
            h = h.add(m)?;
        }
        output(h, &self.norm, self.lm_head.as_ref(), &self.embed_tokens, ctx.head)
    }
}

impl LanguageModel for Model {
    fn embed_tokens(&self, tokens: &Array) -> Result<Array> {
        self.embed_tokens.forward(tokens)
    }

    fn forward(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        self.run(input, ctx)
    }

    fn batched(&self) -> bool {
        true
    }

    fn new_cache(&self) -> Vec<Cache> {
        let window = self.config.sliding_window.unwrap_or(0);
        self.layers.iter().map(|l| if l.sliding { Cache::windowed(window) } else { Cache::kv() }).collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new(&self.config.model_type, self.config.vocab_size, self.config.hidden_size, self.config.num_hidden_layers, self.config.max_position_embeddings)
    }
}
