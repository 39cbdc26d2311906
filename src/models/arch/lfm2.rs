//! LFM2 (Liquid AI): a hybrid of gated short convolutions and grouped-query
//! attention. Most layers are `ShortConv`: in_proj gives B, C and x; the
//! depthwise causal conv (kernel `conv_L_cache`) runs over B*x and C gates
//! its output. Layers listed in `full_attn_idxs` / `layer_types` are attention
//! with q/k RMSNorm. The final norm is named `embedding_norm`; the head is
//! always the tied embedding.
//!
//! Caches: a `StateCache` holding the last K-1 inputs of each conv layer, a KV
//! cache for each attention layer.

use crate::models::nn::attention::{hybrid_mask, Attention, AttentionSpec, QkNorm};
use crate::models::cache::{Cache, StateCache};
use crate::models::nn::layers::{output, swiglu};
use crate::models::nn::rope::Rope;
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Head, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::{Error, Result};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "lfm2")]
    pub model_type: String,
    pub vocab_size: i32,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub num_attention_heads: i32,
    #[serde(default)]
    pub num_key_value_heads: Option<i32>,
    #[serde(default = "ctx")]
    pub max_position_embeddings: i32,
    #[serde(default = "eps")]
    pub norm_eps: f32,
    #[serde(default)]
    pub conv_bias: bool,
    #[serde(rename = "conv_L_cache")]
    pub conv_l_cache: i32,
    pub block_dim: i32,
    #[serde(default)]
    pub block_ff_dim: Option<i32>,
    #[serde(default)]
    pub intermediate_size: Option<i32>,
    #[serde(default = "one")]
    pub block_multiple_of: i32,
    #[serde(default)]
    pub block_ffn_dim_multiplier: Option<f32>,
    #[serde(default)]
    pub block_auto_adjust_ff_dim: bool,
    #[serde(default = "theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    #[serde(default)]
    pub full_attn_idxs: Option<Vec<i32>>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn lfm2() -> String {
    "lfm2".into()
}
fn ctx() -> i32 {
    128000
}
fn eps() -> f32 {
    1e-5
}
fn one() -> i32 {
    1
}
fn theta() -> f32 {
    1_000_000.0
}

impl Config {
    fn kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn theta(&self) -> f32 {
        self.rope_parameters.as_ref().and_then(|p| p["rope_theta"].as_f64()).map_or(self.rope_theta, |t| t as f32)
    }

    /// The attention layers: `full_attn_idxs`, or the `full_attention` entries of `layer_types`.
    pub fn attention_layers(&self) -> Result<Vec<i32>> {
        let n = self.num_hidden_layers;
        let idx = match (&self.full_attn_idxs, &self.layer_types) {
            (Some(i), _) => i.clone(),
            (None, Some(kinds)) => {
                if kinds.len() != n as usize {
                    return Err(cfg_err(format!("layer_types has {} entries for {n} layers", kinds.len())));
                }
                let mut v = Vec::new();
                for (i, k) in kinds.iter().enumerate() {
                    match k.as_str() {
                        "full_attention" => v.push(i as i32),
                        "conv" => {}
                        other => return Err(cfg_err(format!("layer_types[{i}] is '{other}'; expected conv or full_attention"))),
                    }
                }
                v
            }
            (None, None) => return Err(cfg_err("LFM2 config names no attention layers (full_attn_idxs or layer_types)")),
        };
        if let Some(bad) = idx.iter().find(|&&i| !(0..n).contains(&i)) {
            return Err(cfg_err(format!("full_attn_idxs has layer {bad}, beyond the {n} layers")));
        }
        if idx.is_empty() {
            return Err(cfg_err("LFM2 config has no attention layer"));
        }
        Ok(idx)
    }

    /// The feed-forward width (mlx-lm's `MLP`: 2/3 of it, times the multiplier,
    /// rounded up to `block_multiple_of`, when auto-adjusted).
    pub fn ff_dim(&self) -> Result<i32> {
        let base = self.block_ff_dim.or(self.intermediate_size).ok_or_else(|| cfg_err("LFM2 config has neither block_ff_dim nor intermediate_size"))?;
        if !self.block_auto_adjust_ff_dim {
            return Ok(base);
        }
        let mut ff = (2 * base as i64 / 3) as f64;
        if let Some(m) = self.block_ffn_dim_multiplier {
            ff = (m as f64 * ff).trunc();
        }
        let m = self.block_multiple_of.max(1) as i64;
        let ff = m * ((ff as i64 + m - 1) / m);
        i32::try_from(ff).map_err(|_| cfg_err("LFM2 feed-forward width out of range"))
    }

    pub fn validate(&self) -> Result<()> {
        crate::models::Sizes {
            hidden: self.hidden_size,
            intermediate: self.ff_dim()?,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_dim: None,
            vocab: self.vocab_size,
        }
        .check()?;
        if self.block_dim != self.hidden_size {
            return Err(cfg_err(format!("block_dim ({}) must equal hidden_size ({})", self.block_dim, self.hidden_size)));
        }
        if !(2..=64).contains(&self.conv_l_cache) {
            return Err(cfg_err(format!("conv_L_cache is {}; it must be between 2 and 64", self.conv_l_cache)));
        }
        self.attention_layers()?;
        Ok(())
    }
}

/// The gated short convolution: y = C * conv(B * x), causal, depthwise.
struct ShortConv {
    in_proj: Linear,
    out_proj: Linear,
    /// [hidden, K, 1] (MLX layout).
    conv: Array,
    conv_bias: Option<Array>,
    kernel: i32,
}

impl ShortConv {
    fn load(w: &mut Weights, p: &str, c: &Config) -> Result<Self> {
        let h = c.hidden_size;
        let k = c.conv_l_cache;
        let name = format!("{p}.conv.weight");
        let conv = w.take(&name)?;
        // Hugging Face stores [H, 1, K]; MLX [H, K, 1].
        let conv = if conv.shape() == [h, 1, k] { conv.swap_axes(1, 2)? } else { conv };
        if conv.shape() != [h, k, 1] {
            return Err(Error::ShapeMismatch { name, expected: vec![h, k, 1], actual: conv.shape().to_vec() });
        }
        Ok(ShortConv {
            in_proj: Linear::load(w, &format!("{p}.in_proj"), 3 * h, h, c.conv_bias)?,
            out_proj: Linear::load(w, &format!("{p}.out_proj"), h, h, c.conv_bias)?,
            conv,
            conv_bias: if c.conv_bias { Some(w.take_shaped(&format!("{p}.conv.bias"), &[h])?) } else { None },
            kernel: k,
        })
    }

    fn forward(&self, x: &Array, cache: &mut StateCache) -> Result<Array> {
        let (b, t, h) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let bcx = self.in_proj.forward(x)?;
        let gate_b = bcx.index((.., .., ..h));
        let gate_c = bcx.index((.., .., h..2 * h));
        let xs = bcx.index((.., .., 2 * h..));
        let bx = gate_b.multiply(&xs)?;
        let keep = self.kernel - 1;
        let state = match cache.get(0) {
            Some(s) if s.shape() == [b, keep, h] => s.clone(),
            Some(s) => {
                return Err(Error::ShapeMismatch { name: "conv state".into(), expected: vec![b, keep, h], actual: s.shape().to_vec() })
            }
            None => ops::zeros_dtype(&[b, keep, h], bx.dtype())?,
        };
        let bx = ops::concatenate(&[state, bx], 1)?;
        let total = bx.shape()[1];
        cache.set(0, bx.index((.., (total - keep).., ..)));
        cache.advance(t);
        let mut conv = ops::conv1d(&bx, &self.conv, 1, 0, 1, h)?;
        if let Some(bias) = &self.conv_bias {
            conv = conv.add(bias)?;
        }
        self.out_proj.forward(&gate_c.multiply(&conv)?)
    }
}

struct FeedForward {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

// One per layer, built once at load: the size gap between the variants costs
// nothing, and a Box would add an indirection to every forward.
#[allow(clippy::large_enum_variant)]
enum Operator {
    Conv(ShortConv),
    Attention(Attention),
}

struct Block {
    op: Operator,
    feed_forward: FeedForward,
    operator_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

pub struct Model {
    config: Config,
    embed_tokens: Embedding,
    layers: Vec<Block>,
    embedding_norm: RmsNorm,
    rope: Rope,
}

/// LFM2's attention names, as the shared attention layer reads them.
fn rename_attention(w: &mut Weights, p: &str) -> Result<()> {
    let mut moved = Vec::new();
    for (from, to) in [("out_proj", "o_proj"), ("q_layernorm", "q_norm"), ("k_layernorm", "k_norm")] {
        for suffix in ["weight", "scales", "biases"] {
            let name = format!("{p}.{from}.{suffix}");
            if w.contains(&name) {
                moved.push((format!("{p}.{to}.{suffix}"), w.take(&name)?));
            }
        }
    }
    w.insert_all(moved);
    Ok(())
}

impl Model {
    pub fn load(config: Config, mut w: Weights) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let (h, eps) = (c.hidden_size, c.norm_eps);
        let attn = c.attention_layers()?;
        let ff = c.ff_dim()?;
        let head_dim = h / c.num_attention_heads;
        let spec = AttentionSpec {
            hidden: h,
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim,
            qkv_bias: false,
            o_bias: false,
            qk_norm: Some(QkNorm { eps, plus_one: false }),
            scale: (head_dim as f32).powf(-0.5),
            sinks: false,
            position_scale: None,
            fused_decode: false,
        };
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, h)?;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let op = if attn.contains(&i) {
                let a = format!("{p}.self_attn");
                rename_attention(&mut w, &a)?;
                Operator::Attention(Attention::load(&mut w, &a, spec)?)
            } else {
                Operator::Conv(ShortConv::load(&mut w, &format!("{p}.conv"), c)?)
            };
            let f = format!("{p}.feed_forward");
            layers.push(Block {
                op,
                feed_forward: FeedForward {
                    w1: Linear::load(&mut w, &format!("{f}.w1"), ff, h, false)?,
                    w2: Linear::load(&mut w, &format!("{f}.w2"), h, ff, false)?,
                    w3: Linear::load(&mut w, &format!("{f}.w3"), ff, h, false)?,
                },
                operator_norm: RmsNorm::load(&mut w, &format!("{p}.operator_norm"), h, eps)?,
                ffn_norm: RmsNorm::load(&mut w, &format!("{p}.ffn_norm"), h, eps)?,
            });
        }
        let embedding_norm = RmsNorm::load(&mut w, "model.embedding_norm", h, eps)?;
        let _ = w.take("lm_head.weight");
        let rope = Rope::new(head_dim, c.theta(), None)?;
        w.finish(&["rotary_emb.inv_freq"])?;
        Ok(Model { config, embed_tokens, layers, embedding_norm, rope })
    }
}

impl Model {
    /// One sequence's pass (its short-convolution states are its own).
    fn run(&self, input: Input, cache: &mut [Cache], head: Head) -> Result<Output> {
        // One mask for all attention layers, built once per pass.
        let (_, l) = input.dims()?;
        let mask = hybrid_mask(l, cache, self.layers.len())?;
        let mut h = input.embed(self.config.hidden_size, |t| self.embed_tokens.forward(t))?;
        for (layer, c) in self.layers.iter().zip(cache.iter_mut()) {
            let x = layer.operator_norm.forward(&h)?;
            let r = match &layer.op {
                Operator::Conv(conv) => conv.forward(&x, c.as_state()?)?,
                Operator::Attention(a) => a.forward(&x, c.as_kv()?, &self.rope, &mask)?,
            };
            h = h.add(r)?;
            let x = layer.ffn_norm.forward(&h)?;
            let f = &layer.feed_forward;
            let m = f.w2.forward(&swiglu(&f.w1.forward(&x)?, &f.w3.forward(&x)?)?)?;
            h = h.add(m)?;
        }
        output(h, &self.embedding_norm, None, &self.embed_tokens, head)
    }
}

impl LanguageModel for Model {
    fn embed_tokens(&self, tokens: &Array) -> Result<Array> {
        self.embed_tokens.forward(tokens)
    }

    fn forward(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        ctx.each_row(input, |input, cache, head| self.run(input, cache, head))
    }

    fn new_cache(&self) -> Vec<Cache> {
        self.layers
            .iter()
            .map(|b| match b.op {
                Operator::Conv(_) => Cache::state(1),
                Operator::Attention(_) => Cache::kv(),
            })
            .collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new(&self.config.model_type, self.config.vocab_size, self.config.hidden_size, self.config.num_hidden_layers, self.config.max_position_embeddings)
    }
}
