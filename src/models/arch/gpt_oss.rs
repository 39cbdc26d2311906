//! gpt-oss (gpt-oss-20b, gpt-oss-120b): attention with biases and a learned
//! sink logit per head, sliding-window (128) and full layers alternating per
//! `layer_types`, YaRN RoPE, and a mixture of experts on every layer with a
//! biased router (top-k of the raw logits, softmax over those k) and
//! clamped-SwiGLU experts with biases, MXFP4-quantized as released.

use crate::models::nn::attention::{layer_kv, Attention, AttentionSpec, LayerMasks};
use crate::models::cache::Cache;
use crate::models::nn::layers::output;
use crate::models::nn::moe::{Glu, SwitchGlu};
use crate::models::nn::rope::Rope;
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::{Error, Result};
use mlx_rs::{ops, Array, Dtype};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub base: crate::models::arch::llama::Config,
    pub num_local_experts: i32,
    pub num_experts_per_tok: i32,
    #[serde(default = "default_window")]
    pub sliding_window: i32,
    /// "sliding_attention" / "full_attention" per layer; alternating from a
    /// sliding layer when absent (mlx-lm's default).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub swiglu_limit: Option<f32>,
}

fn default_window() -> i32 {
    128
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        self.base.validate()?;
        let e = self.num_local_experts;
        if !(1..=4096).contains(&e) {
            return Err(cfg_err(format!("num_local_experts is {e}; it must be between 1 and 4096")));
        }
        if !(1..=e).contains(&self.num_experts_per_tok) {
            return Err(cfg_err(format!(
                "num_experts_per_tok ({}) must be between 1 and num_local_experts ({e})",
                self.num_experts_per_tok
            )));
        }
        if !(1..=1 << 20).contains(&self.sliding_window) {
            return Err(cfg_err(format!("sliding_window is {}; it must be positive", self.sliding_window)));
        }
        if let Some(limit) = self.swiglu_limit.filter(|l| *l != crate::models::nn::layers::SWIGLU_OAI_LIMIT) {
            return Err(cfg_err(format!("swiglu_limit {limit} is not supported (gpt-oss uses 7.0)")));
        }
        let kinds = self.layer_kinds()?;
        if kinds.len() != self.base.num_hidden_layers as usize {
            return Err(cfg_err(format!(
                "layer_types has {} entries for {} layers",
                kinds.len(),
                self.base.num_hidden_layers
            )));
        }
        Ok(())
    }

    /// Whether each layer attends through the sliding window.
    fn layer_kinds(&self) -> Result<Vec<bool>> {
        match &self.layer_types {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(cfg_err(format!("layer_types: unknown layer type '{other}'"))),
                })
                .collect(),
            None => Ok((0..self.base.num_hidden_layers).map(|i| i % 2 == 0).collect()),
        }
    }
}

/// The experts of one layer and their router.
struct MlpBlock {
    router: Linear,
    experts: SwitchGlu,
    num_experts: i32,
    top_k: i32,
}

impl MlpBlock {
    fn forward(&self, x: &Array) -> Result<Array> {
        self.experts.top_k_then_softmax(x, &self.router, self.top_k, self.num_experts)
    }
}

struct Block {
    self_attn: Attention,
    mlp: MlpBlock,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    sliding: bool,
}

pub struct Model {
    config: Config,
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

impl Model {
    pub fn load(config: Config, mut w: Weights) -> Result<Self> {
        config.validate()?;
        sanitize(&mut w, config.base.num_hidden_layers)?;
        let c = &config.base;
        let (h, eps, hd) = (c.hidden_size, c.rms_norm_eps, c.head_dim());
        let spec = AttentionSpec {
            hidden: h,
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim: hd,
            qkv_bias: true,
            o_bias: true,
            qk_norm: None,
            scale: (hd as f32).powf(-0.5),
            sinks: true,
            position_scale: None,
            fused_decode: true,
        };
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, h)?;
        let (experts, top_k) = (config.num_local_experts, config.num_experts_per_tok);
        let mut layers = Vec::new();
        for (i, sliding) in config.layer_kinds()?.into_iter().enumerate() {
            let p = format!("model.layers.{i}");
            let mlp = MlpBlock {
                router: Linear::load(&mut w, &format!("{p}.mlp.router"), experts, h, true)?,
                experts: SwitchGlu::load(&mut w, &format!("{p}.mlp.experts"), experts, h, c.intermediate_size, true, Glu::OaiClamped)?,
                num_experts: experts,
                top_k,
            };
            layers.push(Block {
                self_attn: Attention::load(&mut w, &format!("{p}.self_attn"), spec)?,
                mlp,
                input_layernorm: RmsNorm::load(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
                post_attention_layernorm: RmsNorm::load(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
                sliding,
            });
        }
        let norm = RmsNorm::load(&mut w, "model.norm", h, eps)?;
        let lm_head = Linear::load(&mut w, "lm_head", c.vocab_size, h, false)?;
        let rope = Rope::new(hd, c.rope_theta, c.rope_scaling.as_ref())?;
        w.finish(&["rotary_emb.inv_freq"])?;
        Ok(Model { config, embed_tokens, layers, norm, lm_head, rope })
    }
}

/// OpenAI's release layout (`experts.gate_up_proj_blocks`, `_scales`, `_bias`,
/// gate and up rows interleaved, MXFP4 blocks as bytes) into MLX's
/// (`experts.{gate,up,down}_proj.{weight,scales,bias}`), as mlx-lm's `sanitize`.
fn sanitize(w: &mut Weights, layers: i32) -> Result<()> {
    let split = |a: &Array, axis: i32| -> Result<(Array, Array)> {
        // Even rows are the gate, odd rows the up projection.
        let n = a.shape()[(a.ndim() as i32 + axis) as usize];
        let even = ops::arange::<_, i32>(0, n, 2)?;
        let odd = ops::arange::<_, i32>(1, n, 2)?;
        Ok((a.take_axis(&even, axis)?, a.take_axis(&odd, axis)?))
    };
    // [experts, out, in/32, 16] bytes -> [experts, out, in/8] uint32 words.
    let words = |a: Array, name: &str| -> Result<Array> {
        let s = a.shape().to_vec();
        if a.dtype() != Dtype::Uint8 || s.len() != 4 || s[3] != 16 {
            return Err(Error::ShapeMismatch { name: name.into(), expected: vec![-1, -1, -1, 16], actual: s });
        }
        Ok(a.view::<u32>()?.reshape(&[s[0], s[1], s[2] * 4])?)
    };
    for i in 0..layers {
        let p = format!("model.layers.{i}.mlp.experts");
        if !w.contains(&format!("{p}.gate_up_proj_blocks")) && !w.contains(&format!("{p}.gate_up_proj")) {
            continue;
        }
        let mut out = Vec::new();
        for (src, dst) in [("gate_up_proj_blocks", "weight"), ("gate_up_proj", "weight"), ("gate_up_proj_scales", "scales")] {
            let name = format!("{p}.{src}");
            if let Ok(a) = w.take(&name) {
                let a = if src.ends_with("_blocks") { words(a, &name)? } else { a };
                let (gate, up) = split(&a, -2)?;
                out.push((format!("{p}.gate_proj.{dst}"), gate));
                out.push((format!("{p}.up_proj.{dst}"), up));
            }
        }
        let (gate, up) = split(&w.take(&format!("{p}.gate_up_proj_bias"))?, -1)?;
        out.push((format!("{p}.gate_proj.bias"), gate));
        out.push((format!("{p}.up_proj.bias"), up));
        for (src, dst) in [("down_proj_blocks", "weight"), ("down_proj", "weight"), ("down_proj_scales", "scales"), ("down_proj_bias", "bias")] {
            let name = format!("{p}.{src}");
            if let Ok(a) = w.take(&name) {
                let a = if src.ends_with("_blocks") { words(a, &name)? } else { a };
                out.push((format!("{p}.down_proj.{dst}"), a));
            }
        }
        w.insert_all(out);
    }
    Ok(())
}

impl Model {
    /// The decoder over a batch: `ctx.rows[b]` holds row b's caches.
    fn run(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        let rows = &mut *ctx.rows;
        let (_, l) = input.dims()?;
        let mut h = input.embed(self.config.base.hidden_size, |t| self.embed_tokens.forward(t))?;
        // One mask per kind of layer and row, built once per pass.
        let sliding: Vec<bool> = self.layers.iter().map(|x| x.sliding).collect();
        let masks = LayerMasks::build_rows(l, &sliding, rows)?;
        // Each residual add is fused with the norm after it (`after_residual`);
        // the last layer's feed-forward output is added after the loop.
        let mut pending: Option<Array> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = LayerMasks::of_rows(&masks, layer.sliding)?;
            let x = layer.input_layernorm.after_residual(&mut h, pending.take())?;
            // The output projection's bias joins the residual kernel.
            let (a, bias) = layer.self_attn.forward_rows_parts(&x, &mut layer_kv(rows, i)?, &self.rope, &mask)?;
            let x = layer.post_attention_layernorm.after_biased_residual(&mut h, &a, bias)?;
            pending = Some(layer.mlp.forward(&x)?);
        }
        if let Some(m) = pending {
            h = h.add(m)?;
        }
        output(h, &self.norm, Some(&self.lm_head), &self.embed_tokens, ctx.head)
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
            .map(|l| if l.sliding { Cache::windowed(self.config.sliding_window) } else { Cache::kv() })
            .collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new("gpt_oss", self.config.base.vocab_size, self.config.base.hidden_size, self.config.base.num_hidden_layers, self.config.base.max_position_embeddings)
    }
}
