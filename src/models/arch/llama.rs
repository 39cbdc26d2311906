//! Llama architecture (Llama 2/3.x, SmolLM2, Mistral, SmolLM3): pre-norm
//! decoder blocks with grouped-query attention, RoPE and a SwiGLU MLP.
//! SmolLM3 drops RoPE on every `no_rope_layer_interval`-th layer ("NoPE"
//! layers, listed in `no_rope_layers`: 1 = rotate, 0 = not).

use crate::models::nn::attention::{layer_kv, row_masks, Attention, AttentionSpec, Mask, QkNorm};
use crate::models::cache::Cache;
use crate::models::nn::layers::{output, swiglu};
use crate::models::nn::rope::{Rope, RopeScaling};
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::Result;
use mlx_rs::Array;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub hidden_size: i32,
    pub intermediate_size: i32,
    pub num_hidden_layers: i32,
    pub num_attention_heads: i32,
    #[serde(default)]
    pub num_key_value_heads: Option<i32>,
    #[serde(default)]
    pub head_dim: Option<i32>,
    pub vocab_size: i32,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: i32,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// SmolLM3: per layer, 1 = RoPE, 0 = none. Absent: derived from the interval.
    #[serde(default)]
    pub no_rope_layers: Option<Vec<i32>>,
    #[serde(default)]
    pub no_rope_layer_interval: Option<i32>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    10000.0
}
fn default_ctx() -> i32 {
    4096
}

impl Config {
    /// Checks the sizes before anything divides by them or allocates with them.
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
        if let Some(v) = &self.no_rope_layers {
            if v.len() != self.num_hidden_layers as usize {
                return Err(cfg_err(format!(
                    "no_rope_layers has {} entries for {} layers",
                    v.len(),
                    self.num_hidden_layers
                )));
            }
        }
        if self.no_rope_layer_interval.is_some_and(|n| n < 1) {
            return Err(cfg_err("no_rope_layer_interval must be at least 1"));
        }
        Ok(())
    }

    /// Whether layer `i` applies RoPE (false only on SmolLM3's NoPE layers).
    pub fn uses_rope(&self, i: i32) -> bool {
        if self.model_type != "smollm3" {
            return true;
        }
        match &self.no_rope_layers {
            Some(v) => v.get(i as usize).is_none_or(|&r| r != 0),
            None => (i + 1) % self.no_rope_layer_interval.unwrap_or(4).max(1) != 0,
        }
    }

    pub fn head_dim(&self) -> i32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    pub fn kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// What distinguishes the llama-like families that share this decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Variant {
    /// Bias on q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
}

pub(crate) fn attention_spec(c: &Config, v: Variant) -> AttentionSpec {
    AttentionSpec {
        hidden: c.hidden_size,
        heads: c.num_attention_heads,
        kv_heads: c.kv_heads(),
        head_dim: c.head_dim(),
        qkv_bias: c.attention_bias || v.qkv_bias,
        o_bias: c.attention_bias,
        qk_norm: v.qk_norm.then_some(QkNorm { eps: c.rms_norm_eps, plus_one: false }),
        scale: (c.head_dim() as f32).powf(-0.5),
        sinks: false,
        position_scale: None,
        fused_decode: false,
    }
}

/// The SwiGLU feed-forward block (also the dense layers of MoE families).
pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(w: &mut Weights, p: &str, c: &Config) -> Result<Self> {
        Self::new(w, p, c.hidden_size, c.intermediate_size, c.mlp_bias)
    }
    pub(crate) fn new(w: &mut Weights, p: &str, h: i32, i: i32, bias: bool) -> Result<Self> {
        Ok(Mlp {
            gate_proj: Linear::load(w, &format!("{p}.gate_proj"), i, h, bias)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj"), i, h, bias)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj"), h, i, bias)?,
        })
    }
    pub(crate) fn forward(&self, x: &Array) -> Result<Array> {
        let h = swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

struct Block {
    /// SmolLM3's NoPE layers attend without positions.
    nope: bool,
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
    no_rope: Rope,
}

impl Model {
    pub fn load(config: Config, w: Weights) -> Result<Self> {
        Self::load_variant(config, w, Variant::default())
    }

    pub fn load_variant(config: Config, mut w: Weights, variant: Variant) -> Result<Self> {
        let c = &config;
        c.validate()?;
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, c.hidden_size)?;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                nope: !c.uses_rope(i),
                self_attn: Attention::load(&mut w, &format!("{p}.self_attn"), attention_spec(c, variant))?,
                mlp: Mlp::load(&mut w, &format!("{p}.mlp"), c)?,
                input_layernorm: RmsNorm::load(&mut w, &format!("{p}.input_layernorm"), c.hidden_size, c.rms_norm_eps)?,
                post_attention_layernorm: RmsNorm::load(
                    &mut w,
                    &format!("{p}.post_attention_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
            });
        }
        let norm = RmsNorm::load(&mut w, "model.norm", c.hidden_size, c.rms_norm_eps)?;
        // A checkpoint may ship a head even when tied; if it does, it is used.
        let lm_head = if w.contains("lm_head.weight") {
            Some(Linear::load(&mut w, "lm_head", c.vocab_size, c.hidden_size, false)?)
        } else if c.tie_word_embeddings {
            None
        } else {
            return Err(crate::error::Error::MissingTensor("lm_head.weight".into()));
        };
        let rope = Rope::new(c.head_dim(), c.rope_theta, c.rope_scaling.as_ref())?;
        w.finish(&["rotary_emb.inv_freq"])?;
        Ok(Model { config, embed_tokens, layers, norm, lm_head, rope, no_rope: Rope::identity() })
    }
}

impl Model {
    /// Replaces the positional encoding (Phi-3's LongRoPE).
    pub fn set_rope(&mut self, rope: Rope) {
        self.rope = rope;
    }
}

impl Model {
    /// The decoder over a batch: `ctx.rows[b]` holds row b's caches.
    fn run(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        let rows = &mut *ctx.rows;
        let (_, l) = input.dims()?;
        let mut h = input.embed(self.config.hidden_size, |t| self.embed_tokens.forward(t))?;
        let masks = row_masks(l, rows, self.layers.len())?;
        let masks: Vec<&Mask> = masks.iter().collect();
        // Each residual add is fused with the norm after it (`after_residual`);
        // the last layer's feed-forward output is added after the loop.
        let mut pending: Option<Array> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let rope = if layer.nope { &self.no_rope } else { &self.rope };
            let x = layer.input_layernorm.after_residual(&mut h, pending.take())?;
            let mut kvs = layer_kv(rows, i)?;
            let a = layer.self_attn.forward_rows(&x, &mut kvs, rope, &masks)?;
            let x = layer.post_attention_layernorm.after_residual(&mut h, Some(a))?;
            pending = Some(layer.mlp.forward(&x)?);
        }
        if let Some(m) = pending {
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

    fn merges_caches(&self) -> bool {
        true
    }

    fn new_cache(&self) -> Vec<Cache> {
        (0..self.layers.len()).map(|_| Cache::kv()).collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new(&self.config.model_type, self.config.vocab_size, self.config.hidden_size, self.config.num_hidden_layers, self.config.max_position_embeddings)
    }
}
