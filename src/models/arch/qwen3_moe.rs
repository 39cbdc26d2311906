//! Qwen3-MoE (Qwen3-30B-A3B, Qwen3-Coder-30B-A3B, Qwen3-235B-A22B): Qwen3's
//! attention (q/k norms) with a sparse mixture-of-experts block on every
//! `decoder_sparse_step`-th layer and a dense MLP on `mlp_only_layers`.

use crate::models::nn::attention::{layer_kv, row_masks, Attention, AttentionSpec, Mask};
use crate::models::cache::Cache;
use crate::models::nn::layers::output;
use crate::models::arch::llama::{attention_spec, Mlp, Variant};
use crate::models::nn::moe::{stack_experts, SparseMoe};
use crate::models::nn::rope::Rope;
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::Result;
use mlx_rs::Array;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub base: crate::models::arch::llama::Config,
    pub num_experts: i32,
    pub num_experts_per_tok: i32,
    #[serde(default = "one")]
    pub decoder_sparse_step: i32,
    #[serde(default)]
    pub mlp_only_layers: Vec<i32>,
    pub moe_intermediate_size: i32,
    #[serde(default)]
    pub norm_topk_prob: bool,
}

fn one() -> i32 {
    1
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        self.base.validate()?;
        if !(1..=4096).contains(&self.num_experts) {
            return Err(cfg_err(format!("num_experts is {}; it must be between 1 and 4096", self.num_experts)));
        }
        if !(1..=self.num_experts).contains(&self.num_experts_per_tok) {
            return Err(cfg_err(format!(
                "num_experts_per_tok ({}) must be between 1 and num_experts ({})",
                self.num_experts_per_tok, self.num_experts
            )));
        }
        if !(1..=1 << 20).contains(&self.moe_intermediate_size) || self.decoder_sparse_step < 1 {
            return Err(cfg_err("moe_intermediate_size and decoder_sparse_step must be positive"));
        }
        Ok(())
    }

    fn is_sparse(&self, i: i32) -> bool {
        !self.mlp_only_layers.contains(&i) && (i + 1) % self.decoder_sparse_step == 0
    }
}

enum Ffn {
    Dense(Mlp),
    Sparse(SparseMoe),
}

struct Block {
    self_attn: Attention,
    mlp: Ffn,
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
    pub fn load(config: Config, mut w: Weights) -> Result<Self> {
        config.validate()?;
        let c = &config.base;
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, h)?;
        // The fused decode attention wins on this family (`AttentionSpec::fused_decode`).
        let spec = AttentionSpec { fused_decode: true, ..attention_spec(c, Variant { qkv_bias: false, qk_norm: true }) };
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mlp = if config.is_sparse(i) {
                stack_experts(&mut w, &format!("{p}.mlp"), config.num_experts)?;
                Ffn::Sparse(SparseMoe::load(
                    &mut w,
                    &format!("{p}.mlp"),
                    config.num_experts,
                    config.num_experts_per_tok,
                    h,
                    config.moe_intermediate_size,
                    config.norm_topk_prob,
                )?)
            } else {
                Ffn::Dense(Mlp::new(&mut w, &format!("{p}.mlp"), h, c.intermediate_size, false)?)
            };
            layers.push(Block {
                self_attn: Attention::load(&mut w, &format!("{p}.self_attn"), spec)?,
                mlp,
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
        let rope = Rope::new(c.head_dim(), c.rope_theta, c.rope_scaling.as_ref())?;
        w.finish(&["rotary_emb.inv_freq"])?;
        Ok(Model { config, embed_tokens, layers, norm, lm_head, rope })
    }
}

impl Model {
    /// The decoder over a batch: `ctx.rows[b]` holds row b's caches.
    fn run(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        let rows = &mut *ctx.rows;
        let (_, l) = input.dims()?;
        let mut h = input.embed(self.config.base.hidden_size, |t| self.embed_tokens.forward(t))?;
        let masks = row_masks(l, rows, self.layers.len())?;
        let masks: Vec<&Mask> = masks.iter().collect();
        // Each residual add is fused with the norm after it (`after_residual`);
        // the last layer's feed-forward output is added after the loop.
        let mut pending: Option<Array> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let x = layer.input_layernorm.after_residual(&mut h, pending.take())?;
            let a = layer.self_attn.forward_rows(&x, &mut layer_kv(rows, i)?, &self.rope, &masks)?;
            let x = layer.post_attention_layernorm.after_residual(&mut h, Some(a))?;
            pending = Some(match &layer.mlp {
                Ffn::Dense(mlp) => mlp.forward(&x)?,
                Ffn::Sparse(moe) => moe.forward(&x)?,
            });
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
        ArchInfo::new("qwen3_moe", self.config.base.vocab_size, self.config.base.hidden_size, self.config.base.num_hidden_layers, self.config.base.max_position_embeddings)
    }
}
