//! Qwen3-Next and Qwen3.5 (dense and MoE, text part): hybrid decoders where
//! three of every four layers are Gated DeltaNet linear attention
//! (`gated_delta`) and every `full_attention_interval`-th layer is gated
//! softmax attention (q/k norms, partial RoPE, output times sigmoid(gate)).
//! Qwen3-Next's and Qwen3.5-MoE's feed-forward is a sparse MoE with a gated
//! shared expert; Qwen3.5 dense has a SwiGLU MLP.
//!
//! The two generations differ in the linear layer's projections (Qwen3-Next
//! packs q, k, v, z per key head in `in_proj_qkvz` and b, a in `in_proj_ba`;
//! Qwen3.5 has `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`) and in
//! naming: Qwen3.5 checkpoints are multimodal and keep the language model
//! under `language_model.` (MLX) or `model.language_model.` (Hugging Face);
//! their vision tensors are skipped.
//!
//! Caches: a `StateCache` (conv window, recurrent state) for each linear
//! layer, a KV cache for each attention layer (`new_cache`).
//!
//! Longer than most files: one self-contained file per architecture, as
//! mlx-lm keeps `qwen3_next.py` (config, Gated DeltaNet layer, gated attention,
//! MoE with shared expert, block, model), for both generations.

use crate::models::nn::attention::{hybrid_mask, Mask};
use crate::models::cache::{Cache, KvCache, StateCache};
use crate::models::nn::gated_delta;
use crate::models::nn::layers::output;
use crate::models::arch::llama::Mlp;
use crate::models::nn::moe::{stack_experts, SparseMoe};
use crate::models::nn::rope::{Rope, RopeScaling};
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Head, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::{Error, Result};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array, Dtype};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub model_type: String,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    #[serde(default)]
    pub intermediate_size: i32,
    pub num_attention_heads: i32,
    pub num_key_value_heads: i32,
    #[serde(default)]
    pub head_dim: Option<i32>,
    pub vocab_size: i32,
    #[serde(default = "eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "ctx")]
    pub max_position_embeddings: i32,
    pub linear_num_value_heads: i32,
    pub linear_num_key_heads: i32,
    pub linear_key_head_dim: i32,
    pub linear_value_head_dim: i32,
    pub linear_conv_kernel_dim: i32,
    #[serde(default)]
    pub num_experts: i32,
    #[serde(default)]
    pub num_experts_per_tok: i32,
    #[serde(default = "one")]
    pub decoder_sparse_step: i32,
    #[serde(default)]
    pub shared_expert_intermediate_size: i32,
    #[serde(default)]
    pub mlp_only_layers: Vec<i32>,
    #[serde(default)]
    pub moe_intermediate_size: i32,
    /// Qwen3-Next defaults to false, Qwen3.5 to true (as mlx-lm's args).
    #[serde(default)]
    pub norm_topk_prob: Option<bool>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub rope_theta: Option<f32>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f32>,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Qwen3.5 keeps theta, the rotary fraction and the scaling type here.
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    #[serde(default = "four")]
    pub full_attention_interval: i32,
    /// Hugging Face's explicit per-layer kinds; must agree with the interval.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn eps() -> f32 {
    1e-6
}
fn ctx() -> i32 {
    262144
}
fn one() -> i32 {
    1
}
fn four() -> i32 {
    4
}

impl Config {
    /// The text config of a Qwen3.5 checkpoint (nested under `text_config`)
    /// or Qwen3-Next's top level.
    pub fn from_json(config: &Value) -> Result<Self> {
        let mut text = crate::models::text_config(config).clone();
        if !text["model_type"].is_string() {
            text["model_type"] = config["model_type"].clone();
        }
        let c: Config = serde_json::from_value(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn is_qwen3_5(&self) -> bool {
        self.model_type.starts_with("qwen3_5")
    }

    pub fn head_dim(&self) -> i32 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn rope_param(&self, key: &str) -> Option<f32> {
        self.rope_parameters.as_ref().and_then(|p| p[key].as_f64()).map(|v| v as f32)
    }

    fn theta(&self) -> f32 {
        self.rope_theta.or_else(|| self.rope_param("rope_theta")).unwrap_or(if self.is_qwen3_5() { 100000.0 } else { 10000.0 })
    }

    fn rotary_dims(&self) -> i32 {
        let f = self.partial_rotary_factor.or_else(|| self.rope_param("partial_rotary_factor")).unwrap_or(0.25);
        (self.head_dim() as f32 * f) as i32
    }

    fn norm_topk(&self) -> bool {
        self.norm_topk_prob.unwrap_or(self.is_qwen3_5())
    }

    /// Whether layer `i` is a linear-attention (Gated DeltaNet) layer.
    pub fn is_linear(&self, i: i32) -> bool {
        (i + 1) % self.full_attention_interval != 0
    }

    fn is_sparse(&self, i: i32) -> bool {
        self.num_experts > 0
            && (self.is_qwen3_5() || (!self.mlp_only_layers.contains(&i) && (i + 1) % self.decoder_sparse_step == 0))
    }

    pub fn validate(&self) -> Result<()> {
        let moe = self.num_experts > 0;
        crate::models::Sizes {
            hidden: self.hidden_size,
            intermediate: if moe && self.intermediate_size == 0 { 1 } else { self.intermediate_size },
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            vocab: self.vocab_size,
        }
        .check()?;
        let within = |name: &str, v: i32, max: i32| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(cfg_err(format!("{name} is {v}; it must be between 1 and {max}")))
            }
        };
        within("linear_num_key_heads", self.linear_num_key_heads, 1024)?;
        within("linear_num_value_heads", self.linear_num_value_heads, 1024)?;
        within("linear_key_head_dim", self.linear_key_head_dim, 1024)?;
        within("linear_value_head_dim", self.linear_value_head_dim, 1024)?;
        within("linear_conv_kernel_dim", self.linear_conv_kernel_dim, 64)?;
        within("full_attention_interval", self.full_attention_interval, self.num_hidden_layers)?;
        if self.linear_num_value_heads % self.linear_num_key_heads != 0 {
            return Err(cfg_err(format!(
                "linear_num_value_heads ({}) must be a multiple of linear_num_key_heads ({})",
                self.linear_num_value_heads, self.linear_num_key_heads
            )));
        }
        let rot = self.rotary_dims();
        if rot < 0 || rot > self.head_dim() || rot % 2 != 0 {
            return Err(cfg_err(format!("partial_rotary_factor gives {rot} rotary dims for head_dim {}", self.head_dim())));
        }
        if let Some(kinds) = &self.layer_types {
            if kinds.len() != self.num_hidden_layers as usize {
                return Err(cfg_err(format!(
                    "layer_types has {} entries for {} layers",
                    kinds.len(),
                    self.num_hidden_layers
                )));
            }
            for (i, k) in kinds.iter().enumerate() {
                let linear = match k.as_str() {
                    "linear_attention" => true,
                    "full_attention" => false,
                    other => return Err(cfg_err(format!("layer_types[{i}] is '{other}'; expected linear_attention or full_attention"))),
                };
                if linear != self.is_linear(i as i32) {
                    return Err(cfg_err(format!(
                        "layer_types[{i}] is {k} but full_attention_interval {} makes it {}",
                        self.full_attention_interval,
                        if linear { "full attention" } else { "linear attention" }
                    )));
                }
            }
        }
        if moe {
            within("num_experts", self.num_experts, 4096)?;
            within("num_experts_per_tok", self.num_experts_per_tok, self.num_experts)?;
            within("moe_intermediate_size", self.moe_intermediate_size, 1 << 20)?;
            within("shared_expert_intermediate_size", self.shared_expert_intermediate_size, 1 << 20)?;
            within("decoder_sparse_step", self.decoder_sparse_step, 1024)?;
        }
        Ok(())
    }
}

/// RMSNorm then `silu(gate)` in float32 (mlx-lm's `Qwen3NextRMSNormGated`).
struct GatedNorm(RmsNorm);

impl GatedNorm {
    fn forward(&self, x: &Array, gate: &Array) -> Result<Array> {
        let n = self.0.forward(x)?.as_dtype(Dtype::Float32)?;
        let g = gate.as_dtype(Dtype::Float32)?;
        Ok(g.multiply(ops::sigmoid(&g)?)?.multiply(n)?.as_dtype(x.dtype())?)
    }
}

enum InProj {
    /// Qwen3-Next: q, k, v, z interleaved per key head; b, a likewise.
    Packed { qkvz: Linear, ba: Linear },
    /// Qwen3.5: one projection each.
    Split { qkv: Linear, z: Linear, b: Linear, a: Linear },
}

struct GatedDeltaNet {
    proj: InProj,
    /// Depthwise conv weight [conv_dim, K, 1] (MLX layout).
    conv1d: Array,
    dt_bias: Array,
    a_log: Array,
    norm: GatedNorm,
    out_proj: Linear,
    nk: i32,
    nv: i32,
    dk: i32,
    dv: i32,
    kernel: i32,
}

impl GatedDeltaNet {
    fn load(w: &mut Weights, p: &str, c: &Config) -> Result<Self> {
        let (h, nk, nv, dk, dv) =
            (c.hidden_size, c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim);
        let (key_dim, value_dim) = (nk * dk, nv * dv);
        let conv_dim = 2 * key_dim + value_dim;
        let kernel = c.linear_conv_kernel_dim;
        let proj = if c.is_qwen3_5() {
            InProj::Split {
                qkv: Linear::load(w, &format!("{p}.in_proj_qkv"), conv_dim, h, false)?,
                z: Linear::load(w, &format!("{p}.in_proj_z"), value_dim, h, false)?,
                b: Linear::load(w, &format!("{p}.in_proj_b"), nv, h, false)?,
                a: Linear::load(w, &format!("{p}.in_proj_a"), nv, h, false)?,
            }
        } else {
            InProj::Packed {
                qkvz: Linear::load(w, &format!("{p}.in_proj_qkvz"), 2 * key_dim + 2 * value_dim, h, false)?,
                ba: Linear::load(w, &format!("{p}.in_proj_ba"), 2 * nv, h, false)?,
            }
        };
        let conv_name = format!("{p}.conv1d.weight");
        let conv = w.take(&conv_name)?;
        // Hugging Face stores [conv_dim, 1, K]; MLX [conv_dim, K, 1].
        let conv = if conv.shape() == [conv_dim, 1, kernel] && kernel != 1 { conv.swap_axes(1, 2)? } else { conv };
        if conv.shape() != [conv_dim, kernel, 1] {
            return Err(Error::ShapeMismatch { name: conv_name, expected: vec![conv_dim, kernel, 1], actual: conv.shape().to_vec() });
        }
        Ok(GatedDeltaNet {
            proj,
            conv1d: conv,
            dt_bias: w.take_shaped(&format!("{p}.dt_bias"), &[nv])?,
            a_log: w.take_shaped(&format!("{p}.A_log"), &[nv])?,
            norm: GatedNorm(RmsNorm::load(w, &format!("{p}.norm"), dv, c.rms_norm_eps)?),
            out_proj: Linear::load(w, &format!("{p}.out_proj"), h, value_dim, false)?,
            nk,
            nv,
            dk,
            dv,
            kernel,
        })
    }

    /// (mixed q|k|v [B, S, conv_dim], z [B, S, Hv, Dv], b, a [B, S, Hv]).
    fn project(&self, x: &Array) -> Result<(Array, Array, Array, Array)> {
        let (bsz, s) = (x.shape()[0], x.shape()[1]);
        let (nk, nv, dk, dv) = (self.nk, self.nv, self.dk, self.dv);
        match &self.proj {
            InProj::Split { qkv, z, b, a } => Ok((
                qkv.forward(x)?,
                z.forward(x)?.reshape(&[bsz, s, nv, dv])?,
                b.forward(x)?,
                a.forward(x)?,
            )),
            InProj::Packed { qkvz, ba } => {
                let r = nv / nk;
                let m = qkvz.forward(x)?.reshape(&[bsz, s, nk, -1])?;
                let q = m.index((.., .., .., ..dk));
                let k = m.index((.., .., .., dk..2 * dk));
                let v = m.index((.., .., .., 2 * dk..2 * dk + r * dv));
                let z = m.index((.., .., .., 2 * dk + r * dv..));
                let flat = |a: Array| a.reshape(&[bsz, s, -1]);
                let mixed = ops::concatenate(&[flat(q)?, flat(k)?, flat(v)?], -1)?;
                let ba = ba.forward(x)?.reshape(&[bsz, s, nk, -1])?;
                let b = ba.index((.., .., .., ..r)).reshape(&[bsz, s, nv])?;
                let a = ba.index((.., .., .., r..)).reshape(&[bsz, s, nv])?;
                Ok((mixed, z.reshape(&[bsz, s, nv, dv])?, b, a))
            }
        }
    }

    fn forward(&self, x: &Array, cache: &mut StateCache) -> Result<Array> {
        let (bsz, s) = (x.shape()[0], x.shape()[1]);
        let (mixed, z, b, a) = self.project(x)?;
        let conv_dim = mixed.shape()[2];
        let keep = self.kernel - 1;
        let conv_state = match cache.get(0) {
            Some(c) if c.shape() == [bsz, keep, conv_dim] => c.clone(),
            Some(c) => {
                return Err(Error::ShapeMismatch {
                    name: "conv state".into(),
                    expected: vec![bsz, keep, conv_dim],
                    actual: c.shape().to_vec(),
                })
            }
            None => ops::zeros_dtype(&[bsz, keep, conv_dim], mixed.dtype())?,
        };
        let state = cache.get(1).cloned();
        if let Some(st) = &state {
            let want = [bsz, self.nv, self.dv, self.dk];
            if st.shape() != want {
                return Err(Error::ShapeMismatch { name: "recurrent state".into(), expected: want.to_vec(), actual: st.shape().to_vec() });
            }
        }
        // On CUDA: conv, norms, gates and recurrence in one kernel.
        let zero_state;
        let fused = crate::models::kernels::gated_delta(&crate::models::kernels::GatedDeltaInputs {
            mixed: &mixed,
            conv_in: &conv_state,
            conv_w: &self.conv1d,
            a: &a,
            b: &b,
            a_log: &self.a_log,
            dt_bias: &self.dt_bias,
            state: match &state {
                Some(s) => s,
                None => {
                    zero_state = ops::zeros::<f32>(&[bsz, self.nv, self.dv, self.dk])?;
                    &zero_state
                }
            },
            heads: (self.nk, self.nv),
            dims: (self.dk, self.dv),
        })?;
        if let Some((y, new_state, window)) = fused {
            cache.set(0, window);
            cache.set(1, new_state);
            cache.advance(s);
            let y = self.norm.forward(&y, &z)?;
            return self.out_proj.forward(&y.reshape(&[bsz, s, -1])?);
        }
        let conv_in = ops::concatenate(&[conv_state, mixed], 1)?;
        let total = conv_in.shape()[1];
        cache.set(0, conv_in.index((.., (total - keep).., ..)));
        let conv = ops::conv1d(&conv_in, &self.conv1d, 1, 0, 1, conv_dim)?;
        let conv = conv.multiply(ops::sigmoid(&conv)?)?;
        let key_dim = self.nk * self.dk;
        let q = conv.index((.., .., ..key_dim)).reshape(&[bsz, s, self.nk, self.dk])?;
        let k = conv.index((.., .., key_dim..2 * key_dim)).reshape(&[bsz, s, self.nk, self.dk])?;
        let v = conv.index((.., .., 2 * key_dim..)).reshape(&[bsz, s, self.nv, self.dv])?;
        let (q, k) = gated_delta::normalize_qk(&q, &k, self.dk)?;
        let g = gated_delta::log_decay(&self.a_log, &a, &self.dt_bias)?;
        let beta = ops::sigmoid(&b)?;
        let (y, state) = gated_delta::update(&q, &k, &v, &g, &beta, state.as_ref())?;
        cache.set(1, state);
        cache.advance(s);
        let y = self.norm.forward(&y, &z)?;
        self.out_proj.forward(&y.reshape(&[bsz, s, -1])?)
    }
}

/// An RMSNorm whose weight may be stored as an offset from 1 (`plus_one`:
/// Hugging Face's layout of these models; MLX folders have the 1 folded in).
fn load_norm(w: &mut Weights, name: &str, dim: i32, eps: f32, plus_one: bool) -> Result<RmsNorm> {
    if plus_one {
        RmsNorm::load_plus_one(w, name, dim, eps)
    } else {
        RmsNorm::load(w, name, dim, eps)
    }
}

/// Softmax attention with an output gate: q_proj yields each head's query
/// and gate side by side; q/k RMSNorm; RoPE on the first `rotary_dims`.
struct GatedAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    scale: f32,
}

impl GatedAttention {
    /// `plus_one`: q/k norm weights stored as offsets from 1 (Hugging Face layout).
    fn load(w: &mut Weights, p: &str, c: &Config, plus_one: bool) -> Result<Self> {
        let (h, nh, nkv, hd) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let norm = |w: &mut Weights, name: String| load_norm(w, &name, hd, c.rms_norm_eps, plus_one);
        let bias = c.attention_bias;
        Ok(GatedAttention {
            q_proj: Linear::load(w, &format!("{p}.q_proj"), 2 * nh * hd, h, bias)?,
            k_proj: Linear::load(w, &format!("{p}.k_proj"), nkv * hd, h, bias)?,
            v_proj: Linear::load(w, &format!("{p}.v_proj"), nkv * hd, h, bias)?,
            o_proj: Linear::load(w, &format!("{p}.o_proj"), h, nh * hd, bias)?,
            q_norm: norm(w, format!("{p}.q_norm"))?,
            k_norm: norm(w, format!("{p}.k_norm"))?,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            scale: (hd as f32).powf(-0.5),
        })
    }

    fn forward(&self, x: &Array, cache: &mut KvCache, rope: &Rope, mask: &Mask) -> Result<Array> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let hd = self.head_dim;
        let qg = self.q_proj.forward(x)?.reshape(&[b, l, self.heads, 2 * hd])?;
        let q = qg.index((.., .., .., ..hd));
        let gate = qg.index((.., .., .., hd..)).reshape(&[b, l, -1])?;
        let q = self.q_norm.forward(&q)?.transpose_axes(&[0, 2, 1, 3])?;
        let k = self.k_proj.forward(x)?.reshape(&[b, l, self.kv_heads, hd])?;
        let k = self.k_norm.forward(&k)?.transpose_axes(&[0, 2, 1, 3])?;
        let v = self.v_proj.forward(x)?.reshape(&[b, l, self.kv_heads, hd])?.transpose_axes(&[0, 2, 1, 3])?;
        let offset = cache.offset();
        let q = rope.apply(&q, offset)?;
        let k = rope.apply(&k, offset)?;
        let (k, v) = cache.update_and_fetch(&k, &v)?;
        let o = mask.attend(&q, &k, &v, self.scale, None)?;
        let o = o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj.forward(&o.multiply(ops::sigmoid(&gate)?)?)
    }
}

/// Sparse MoE plus a shared expert scaled by sigmoid(shared_expert_gate).
struct MoeWithShared {
    moe: SparseMoe,
    shared_expert: Mlp,
    shared_expert_gate: Linear,
}

enum Ffn {
    Dense(Mlp),
    Sparse(Box<MoeWithShared>),
}

impl Ffn {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            Ffn::Dense(m) => m.forward(x),
            Ffn::Sparse(m) => {
                let y = m.moe.forward(x)?;
                let shared = m.shared_expert.forward(x)?;
                let g = ops::sigmoid(m.shared_expert_gate.forward(x)?)?;
                Ok(y.add(g.multiply(shared)?)?)
            }
        }
    }
}

enum Mixer {
    Linear(GatedDeltaNet),
    Attention(GatedAttention),
}

struct Block {
    mixer: Mixer,
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
    pub fn load(config: Config, w: Weights) -> Result<Self> {
        config.validate()?;
        let c = &config;
        // Qwen3.5 checkpoints are multimodal: the text model under MLX's
        // `language_model.` root (errors then name tensors as the folder does).
        let root = if c.is_qwen3_5() { "language_model." } else { "" };
        let mut w = w.text_model_only(root);
        // Hugging Face checkpoints store norms as offsets from 1 and the conv
        // as [C, 1, K]; converted MLX folders have both folded (mlx-lm's sanitize).
        let hf_layout = w.tensors().iter().any(|(k, v)| k.ends_with("conv1d.weight") && v.ndim() == 3 && v.shape()[2] != 1);
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        let norm = |w: &mut Weights, name: &str, dim: i32| load_norm(w, name, dim, eps, hf_layout);
        let embed_tokens = Embedding::load(&mut w, &format!("{root}model.embed_tokens"), c.vocab_size, h)?;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("{root}model.layers.{i}");
            let mixer = if c.is_linear(i) {
                Mixer::Linear(GatedDeltaNet::load(&mut w, &format!("{p}.linear_attn"), c)?)
            } else {
                Mixer::Attention(GatedAttention::load(&mut w, &format!("{p}.self_attn"), c, hf_layout)?)
            };
            let mlp = if c.is_sparse(i) {
                let q = format!("{p}.mlp");
                stack_experts(&mut w, &q, c.num_experts)?;
                Ffn::Sparse(Box::new(MoeWithShared {
                    moe: SparseMoe::load(&mut w, &q, c.num_experts, c.num_experts_per_tok, h, c.moe_intermediate_size, c.norm_topk())?,
                    shared_expert: Mlp::new(&mut w, &format!("{q}.shared_expert"), h, c.shared_expert_intermediate_size, false)?,
                    shared_expert_gate: Linear::load(&mut w, &format!("{q}.shared_expert_gate"), 1, h, false)?,
                }))
            } else {
                Ffn::Dense(Mlp::new(&mut w, &format!("{p}.mlp"), h, c.intermediate_size, false)?)
            };
            layers.push(Block {
                mixer,
                mlp,
                input_layernorm: norm(&mut w, &format!("{p}.input_layernorm"), h)?,
                post_attention_layernorm: norm(&mut w, &format!("{p}.post_attention_layernorm"), h)?,
            });
        }
        let final_norm = norm(&mut w, &format!("{root}model.norm"), h)?;
        let lm_head = if c.tie_word_embeddings {
            let _ = w.take(&format!("{root}lm_head.weight"));
            None
        } else {
            Some(Linear::load(&mut w, &format!("{root}lm_head"), c.vocab_size, h, false)?)
        };
        let scaling = c.rope_scaling.clone().filter(|s| !matches!(s.rope_type.as_deref(), Some("default") | None));
        let rope = Rope::new(c.rotary_dims(), c.theta(), scaling.as_ref())?;
        // Multi-token-prediction heads are for speculative decoding; not used here.
        w.finish(&["rotary_emb.inv_freq", "mtp."])?;
        Ok(Model { config, embed_tokens, layers, norm: final_norm, lm_head, rope })
    }
}

impl Model {
    /// One sequence's pass (its recurrent states are its own).
    fn run(&self, input: Input, cache: &mut [Cache], head: Head) -> Result<Output> {
        // One mask for all attention layers, built once per pass.
        let (_, l) = input.dims()?;
        let mask = hybrid_mask(l, cache, self.layers.len())?;
        let mut h = input.embed(self.config.hidden_size, |t| self.embed_tokens.forward(t))?;
        for (layer, c) in self.layers.iter().zip(cache.iter_mut()) {
            let x = layer.input_layernorm.forward(&h)?;
            let r = match &layer.mixer {
                Mixer::Linear(m) => m.forward(&x, c.as_state()?)?,
                Mixer::Attention(a) => a.forward(&x, c.as_kv()?, &self.rope, &mask)?,
            };
            h = h.add(r)?;
            let m = layer.mlp.forward(&layer.post_attention_layernorm.forward(&h)?)?;
            h = h.add(m)?;
        }
        output(h, &self.norm, self.lm_head.as_ref(), &self.embed_tokens, head)
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
            .map(|b| match b.mixer {
                Mixer::Linear(_) => Cache::state(2),
                Mixer::Attention(_) => Cache::kv(),
            })
            .collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new(&self.config.model_type, self.config.vocab_size, self.config.hidden_size, self.config.num_hidden_layers, self.config.max_position_embeddings)
    }
}
