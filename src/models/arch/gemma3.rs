//! Gemma 3 (text): sliding-window attention on five of every six layers (with a
//! windowed KV cache and its own RoPE base), global attention on the sixth,
//! RMSNorm with a +1 offset (folded into the weights at load), q/k norms,
//! embeddings scaled by sqrt(hidden), a GELU-tanh MLP and four norms per block.

use crate::models::nn::attention::{layer_kv, Attention, AttentionSpec, QkNorm, LayerMasks};
use crate::models::cache::Cache;
use crate::models::nn::layers::gelu_tanh_mul;
use crate::models::nn::rope::{Rope, RopeScaling};
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Head, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::Result;
use mlx_rs::{ops, Array};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub hidden_size: i32,
    pub intermediate_size: i32,
    pub num_hidden_layers: i32,
    pub num_attention_heads: i32,
    #[serde(default = "one")]
    pub num_key_value_heads: i32,
    #[serde(default = "default_head_dim")]
    pub head_dim: i32,
    pub vocab_size: i32,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default = "default_local_theta")]
    pub rope_local_base_freq: f32,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f32>,
    #[serde(default = "default_window")]
    pub sliding_window: i32,
    #[serde(default = "default_pattern")]
    pub sliding_window_pattern: i32,
    /// Newer configs list each layer's kind instead of a pattern.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f32>,
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: i32,
}

fn default_model_type() -> String {
    "gemma3_text".into()
}
fn one() -> i32 {
    1
}
fn default_head_dim() -> i32 {
    256
}
fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    1_000_000.0
}
fn default_local_theta() -> f32 {
    10_000.0
}
fn default_window() -> i32 {
    512
}
fn default_pattern() -> i32 {
    6
}
fn default_ctx() -> i32 {
    32768
}

impl Config {
    /// Checks the sizes before anything divides by them or allocates with them.
    pub fn validate(&self) -> Result<()> {
        crate::models::Sizes {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: Some(self.head_dim),
            vocab: self.vocab_size,
        }
        .check()?;
        if self.sliding_window < 1 {
            return Err(cfg_err(format!("sliding_window is {}; it must be at least 1", self.sliding_window)));
        }
        Ok(())
    }

    fn is_sliding(&self, i: i32) -> bool {
        match &self.layer_types {
            Some(t) => t.get(i as usize).is_some_and(|k| k == "sliding_attention"),
            None => (i + 1) % self.sliding_window_pattern.max(1) != 0,
        }
    }
}

fn norm(w: &mut Weights, name: &str, dim: i32, eps: f32) -> Result<RmsNorm> {
    RmsNorm::load_plus_one(w, name, dim, eps)
}

struct Block {
    self_attn: Attention,
    /// Sliding-window layers see only the last `sliding_window` positions.
    window: Option<i32>,
    /// Local layers rotate with their own base.
    rope: Rope,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
}

pub struct Model {
    config: Config,
    embed_tokens: Embedding,
    embed_scale: Array,
    layers: Vec<Block>,
    norm: RmsNorm,
}

impl Model {
    pub fn load(config: Config, mut w: Weights) -> Result<Self> {
        let c = &config;
        c.validate()?;
        let (h, nh, nkv, hd, eps) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps);
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, h)?;
        let scale = c.query_pre_attn_scalar.unwrap_or(hd as f32).powf(-0.5);
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let sliding = c.is_sliding(i);
            // Local layers: plain RoPE at the local base; global: the main base and scaling.
            let rope = if sliding {
                Rope::new(hd, c.rope_local_base_freq, None)?
            } else {
                Rope::new(hd, c.rope_theta, c.rope_scaling.as_ref())?
            };
            layers.push(Block {
                self_attn: Attention::load(
                    &mut w,
                    &a,
                    AttentionSpec {
                        hidden: h,
                        heads: nh,
                        kv_heads: nkv,
                        head_dim: hd,
                        qkv_bias: false,
                        o_bias: false,
                        qk_norm: Some(QkNorm { eps, plus_one: true }),
                        scale,
                        sinks: false,
                        position_scale: None,
                        fused_decode: false,
                    },
                )?,
                window: sliding.then_some(c.sliding_window),
                rope,
                gate_proj: Linear::load(&mut w, &format!("{p}.mlp.gate_proj"), c.intermediate_size, h, false)?,
                up_proj: Linear::load(&mut w, &format!("{p}.mlp.up_proj"), c.intermediate_size, h, false)?,
                down_proj: Linear::load(&mut w, &format!("{p}.mlp.down_proj"), h, c.intermediate_size, false)?,
                input_layernorm: norm(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
                post_attention_layernorm: norm(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
                pre_feedforward_layernorm: norm(&mut w, &format!("{p}.pre_feedforward_layernorm"), h, eps)?,
                post_feedforward_layernorm: norm(&mut w, &format!("{p}.post_feedforward_layernorm"), h, eps)?,
            });
        }
        let final_norm = norm(&mut w, "model.norm", h, eps)?;
        // Gemma ties the output head to the embeddings; a shipped lm_head is a copy.
        let _ = w.take("lm_head.weight");
        w.finish(&["rotary_emb.inv_freq"])?;
        // Like the reference, the scale is rounded to bfloat16 before use.
        let s = half::bf16::from_f32((h as f32).sqrt()).to_f32();
        Ok(Model { embed_scale: mlx_rs::array!(s), config, embed_tokens, layers, norm: final_norm })
    }
}

impl Model {
    /// The decoder over a batch: `ctx.rows[b]` holds row b's caches.
    fn run(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        let rows = &mut *ctx.rows;
        let (_, l) = input.dims()?;
        let e = input.embed(self.config.hidden_size, |t| self.embed_tokens.forward(t))?;
        let mut h = e.multiply(self.embed_scale.as_dtype(e.dtype())?)?;
        // One mask per kind of layer and row, built once: all sliding layers
        // of a row hold the same positions, and so do all global ones.
        let sliding: Vec<bool> = self.layers.iter().map(|x| x.window.is_some()).collect();
        let masks = LayerMasks::build_rows(l, &sliding, rows)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = LayerMasks::of_rows(&masks, layer.window.is_some())?;
            let r = layer.self_attn.forward_rows(&layer.input_layernorm.forward(&h)?, &mut layer_kv(rows, i)?, &layer.rope, &mask)?;
            h = h.add(layer.post_attention_layernorm.forward(&r)?)?;
            let x = layer.pre_feedforward_layernorm.forward(&h)?;
            let m = layer.down_proj.forward(&gelu_tanh_mul(&layer.gate_proj.forward(&x)?, &layer.up_proj.forward(&x)?)?)?;
            h = h.add(layer.post_feedforward_layernorm.forward(&m)?)?;
        }
        let h = self.norm.forward(&ctx.head.positions(&h)?)?;
        if ctx.head == Head::Hidden {
            return Ok(Output::Hidden(h));
        }
        let mut logits = self.embed_tokens.as_linear(&h)?;
        if let Some(cap) = self.config.final_logit_softcapping {
            logits = ops::tanh(logits.divide(mlx_rs::array!(cap))?)?.multiply(mlx_rs::array!(cap))?;
        }
        Ok(Output::Logits(ctx.head.shape_logits(logits)?))
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
        self.layers
            .iter()
            .map(|l| match l.window {
                Some(w) => Cache::windowed(w),
                None => Cache::kv(),
            })
            .collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new(&self.config.model_type, self.config.vocab_size, self.config.hidden_size, self.config.num_hidden_layers, self.config.max_position_embeddings)
    }
}
