//! Gemma 4 (text part; `gemma4_text`, and `gemma4` checkpoints whose vision
//! and audio towers are skipped). Relative to Gemma 3:
//! - sliding and full layers differ in head size (`global_head_dim`), RoPE
//!   ("proportional" partial rotation on full layers) and, in the large
//!   models, K = V on full layers (`attention_k_eq_v`) with their own KV heads;
//! - values get a scale-free RMSNorm, q/k norms are plain, the score scale is 1;
//! - the last `num_kv_shared_layers` layers compute no K/V: each reuses the
//!   keys and values of the last earlier layer of its kind (KV sharing), so
//!   only the first layers hold caches, and shared layers' MLPs may be twice
//!   as wide (`use_double_wide_mlp`);
//! - small models add a per-layer input: a second embedding table gives each
//!   layer a vector per token, gated into the residual stream;
//! - the MoE variant runs a dense MLP and a routed expert block side by side;
//! - every layer ends with a learned scalar; logits are soft-capped.
//!
//! Longer than most files: one self-contained file per architecture, as
//! mlx-lm keeps `gemma4_text.py` (config, attention, MLP, experts, block, model).

use crate::models::nn::attention::{Mask, LayerMasks};
use crate::models::cache::{Cache, KvCache};
use crate::models::nn::layers::gelu_tanh_mul;
use crate::models::nn::moe::{Glu, SwitchGlu};
use crate::models::nn::rope::Rope;
use crate::models::{cfg_err, ArchInfo, Embedding, ForwardCtx, Head, Input, LanguageModel, Linear, Output, RmsNorm, Weights};
use crate::error::{Error, Result};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "model_type")]
    pub model_type: String,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub intermediate_size: i32,
    #[serde(default = "eight")]
    pub num_attention_heads: i32,
    #[serde(default = "head_dim")]
    pub head_dim: i32,
    #[serde(default)]
    pub global_head_dim: Option<i32>,
    #[serde(default = "eps")]
    pub rms_norm_eps: f32,
    pub vocab_size: i32,
    #[serde(default)]
    pub vocab_size_per_layer_input: Option<i32>,
    #[serde(default = "one")]
    pub num_key_value_heads: i32,
    #[serde(default)]
    pub num_global_key_value_heads: Option<i32>,
    #[serde(default)]
    pub num_kv_shared_layers: i32,
    #[serde(default)]
    pub hidden_size_per_layer_input: i32,
    #[serde(default)]
    pub rope_traditional: bool,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    #[serde(default = "window")]
    pub sliding_window: i32,
    #[serde(default = "five")]
    pub sliding_window_pattern: i32,
    #[serde(default = "ctx")]
    pub max_position_embeddings: i32,
    #[serde(default)]
    pub attention_k_eq_v: bool,
    #[serde(default = "softcap")]
    pub final_logit_softcapping: Option<f32>,
    #[serde(default = "yes")]
    pub use_double_wide_mlp: bool,
    #[serde(default)]
    pub enable_moe_block: bool,
    #[serde(default)]
    pub num_experts: Option<i32>,
    #[serde(default)]
    pub top_k_experts: Option<i32>,
    #[serde(default)]
    pub moe_intermediate_size: Option<i32>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn model_type() -> String {
    "gemma4_text".into()
}
fn eight() -> i32 {
    8
}
fn head_dim() -> i32 {
    256
}
fn eps() -> f32 {
    1e-6
}
fn one() -> i32 {
    1
}
fn window() -> i32 {
    512
}
fn five() -> i32 {
    5
}
fn ctx() -> i32 {
    131072
}
fn softcap() -> Option<f32> {
    Some(30.0)
}
fn yes() -> bool {
    true
}

impl Config {
    /// The text config: nested under `text_config` in `gemma4` checkpoints
    /// (whose top-level vocab_size wins, as mlx-lm reads them).
    pub fn from_json(config: &Value) -> Result<Self> {
        let mut text = crate::models::text_config(config).clone();
        if config["text_config"].is_object() {
            if let Some(v) = config.get("vocab_size").filter(|v| v.is_number()) {
                text["vocab_size"] = v.clone();
            }
        }
        let c: Config = serde_json::from_value(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn layer_kinds(&self) -> Vec<String> {
        match &self.layer_types {
            Some(k) => k.clone(),
            None => {
                let p = self.sliding_window_pattern.max(1) as usize;
                (0..self.num_hidden_layers as usize)
                    .map(|i| if (i + 1) % p == 0 { "full_attention" } else { "sliding_attention" }.to_string())
                    .collect()
            }
        }
    }

    fn first_shared(&self) -> i32 {
        self.num_hidden_layers - self.num_kv_shared_layers
    }

    fn rope_for(&self, kind: &str) -> Value {
        match &self.rope_parameters {
            Some(p) => p.get(kind).cloned().unwrap_or(json!({})),
            None if kind == "full_attention" => {
                json!({"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"})
            }
            None => json!({"partial_rotary_factor": 1.0, "rope_theta": 10000.0, "rope_type": "default"}),
        }
    }

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
        let kinds = self.layer_kinds();
        if kinds.len() != self.num_hidden_layers as usize {
            return Err(cfg_err(format!("layer_types has {} entries for {} layers", kinds.len(), self.num_hidden_layers)));
        }
        if let Some((i, k)) = kinds.iter().enumerate().find(|(_, k)| *k != "full_attention" && *k != "sliding_attention") {
            return Err(cfg_err(format!("layer_types[{i}] is '{k}'")));
        }
        if !(0..self.num_hidden_layers).contains(&self.num_kv_shared_layers) {
            return Err(cfg_err(format!(
                "num_kv_shared_layers is {}; it must leave at least one of the {} layers with its own K/V",
                self.num_kv_shared_layers, self.num_hidden_layers
            )));
        }
        // Every shared layer needs an earlier layer of its kind to share with.
        for j in self.first_shared()..self.num_hidden_layers {
            let kind = &kinds[j as usize];
            if !kinds[..self.first_shared() as usize].contains(kind) {
                return Err(cfg_err(format!("layer {j} ({kind}) shares K/V but no earlier layer is of that kind")));
            }
        }
        if self.sliding_window < 1 {
            return Err(cfg_err("sliding_window must be at least 1"));
        }
        if self.global_head_dim.is_some_and(|d| !(1..=1024).contains(&d)) {
            return Err(cfg_err("global_head_dim must be between 1 and 1024"));
        }
        if let Some(n) = self.num_global_key_value_heads {
            if n < 1 || self.num_attention_heads % n != 0 {
                return Err(cfg_err("num_global_key_value_heads must divide num_attention_heads"));
            }
        }
        if self.hidden_size_per_layer_input < 0 || self.hidden_size_per_layer_input > 1 << 16 {
            return Err(cfg_err("hidden_size_per_layer_input is out of range"));
        }
        if self.enable_moe_block {
            let (e, k, i) = (self.num_experts.unwrap_or(0), self.top_k_experts.unwrap_or(0), self.moe_intermediate_size.unwrap_or(0));
            if !(1..=4096).contains(&e) || !(1..=e).contains(&k) || !(1..=1 << 20).contains(&i) {
                return Err(cfg_err("enable_moe_block needs num_experts, top_k_experts (<= num_experts) and moe_intermediate_size"));
            }
        }
        Ok(())
    }
}

struct Attn {
    q_proj: Linear,
    /// None on KV-shared layers.
    k_proj: Option<Linear>,
    /// None on shared layers and where K doubles as V.
    v_proj: Option<Linear>,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: Option<RmsNorm>,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    eps: f32,
    rope: Rope,
}

fn rope_from(params: &Value, head_dim: i32) -> Result<Rope> {
    let theta = params["rope_theta"].as_f64().unwrap_or(10000.0) as f32;
    match params["rope_type"].as_str().or(params["type"].as_str()).unwrap_or("default") {
        "default" => Rope::new(head_dim, theta, None),
        "proportional" => {
            let f = params["partial_rotary_factor"].as_f64().unwrap_or(1.0);
            let factor = params["factor"].as_f64().unwrap_or(1.0) as f32;
            Rope::proportional(head_dim, (head_dim as f64 * f) as i32, theta, factor)
        }
        other => Err(cfg_err(format!("unsupported Gemma 4 rope_type '{other}'"))),
    }
}

impl Attn {
    fn load(w: &mut Weights, p: &str, c: &Config, i: i32, kind: &str) -> Result<Self> {
        let full = kind == "full_attention";
        let hd = if full { c.global_head_dim.unwrap_or(c.head_dim) } else { c.head_dim };
        let k_eq_v = c.attention_k_eq_v && full;
        let kv_heads = match (k_eq_v, c.num_global_key_value_heads) {
            (true, Some(n)) => n,
            _ => c.num_key_value_heads,
        };
        let has_kv = i < c.first_shared();
        let (h, nh) = (c.hidden_size, c.num_attention_heads);
        Ok(Attn {
            q_proj: Linear::load(w, &format!("{p}.q_proj"), nh * hd, h, false)?,
            k_proj: has_kv.then(|| Linear::load(w, &format!("{p}.k_proj"), kv_heads * hd, h, false)).transpose()?,
            v_proj: (has_kv && !k_eq_v).then(|| Linear::load(w, &format!("{p}.v_proj"), kv_heads * hd, h, false)).transpose()?,
            o_proj: Linear::load(w, &format!("{p}.o_proj"), h, nh * hd, false)?,
            q_norm: RmsNorm::load(w, &format!("{p}.q_norm"), hd, c.rms_norm_eps)?,
            k_norm: has_kv.then(|| RmsNorm::load(w, &format!("{p}.k_norm"), hd, c.rms_norm_eps)).transpose()?,
            heads: nh,
            kv_heads,
            head_dim: hd,
            eps: c.rms_norm_eps,
            rope: rope_from(&c.rope_for(kind), hd)?,
        })
    }

    /// Returns the output and the (keys, values, offset) this layer attended
    /// to, for the layers that share them.
    fn forward(
        &self,
        x: &Array,
        mask: &Mask,
        cache: Option<&mut KvCache>,
        shared: Option<&(Array, Array, i32)>,
    ) -> Result<(Array, (Array, Array, i32))> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let hd = self.head_dim;
        let q = self.q_norm.forward(&self.q_proj.forward(x)?.reshape(&[b, l, self.heads, hd])?)?;
        let (k, v, offset) = match (shared, cache, &self.k_proj) {
            (Some(kv), _, _) => kv.clone(),
            (None, Some(cache), Some(k_proj)) => {
                let k = k_proj.forward(x)?.reshape(&[b, l, self.kv_heads, hd])?;
                let v = match &self.v_proj {
                    Some(v_proj) => v_proj.forward(x)?.reshape(&[b, l, self.kv_heads, hd])?,
                    None => k.clone(),
                };
                let offset = cache.offset();
                let k_norm = self.k_norm.as_ref().ok_or_else(|| cfg_err("a layer with K/V has no k_norm"))?;
                let k = self.rope.apply(&k_norm.forward(&k)?.transpose_axes(&[0, 2, 1, 3])?, offset)?;
                let v = mlx_rs::fast::rms_norm(&v, None::<&Array>, self.eps)?.transpose_axes(&[0, 2, 1, 3])?;
                let (k, v) = cache.update_and_fetch(&k, &v)?;
                (k, v, offset)
            }
            _ => return Err(cfg_err("a KV-shared Gemma 4 layer ran without the keys it shares")),
        };
        let q = self.rope.apply(&q.transpose_axes(&[0, 2, 1, 3])?, offset)?;
        let o = mask.attend(&q, &k, &v, 1.0, None)?;
        let o = o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        Ok((self.o_proj.forward(&o)?, (k, v, offset)))
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(w: &mut Weights, p: &str, h: i32, i: i32) -> Result<Self> {
        Ok(Mlp {
            gate_proj: Linear::load(w, &format!("{p}.gate_proj"), i, h, false)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj"), i, h, false)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj"), h, i, false)?,
        })
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        self.down_proj.forward(&gelu_tanh_mul(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?)
    }
}

/// The MoE variant's routed block beside the dense MLP.
struct Experts {
    proj: Linear,
    /// The router's norm weight, already times hidden^-0.5.
    scale: Array,
    per_expert_scale: Array,
    switch_glu: SwitchGlu,
    top_k: i32,
    experts: i32,
    eps: f32,
    pre_feedforward_layernorm_2: RmsNorm,
    post_feedforward_layernorm_1: RmsNorm,
    post_feedforward_layernorm_2: RmsNorm,
}

impl Experts {
    fn route_and_run(&self, h: &Array) -> Result<Array> {
        let x = mlx_rs::fast::rms_norm(h, Some(&self.scale), self.eps)?;
        let scores = self.proj.forward(&x)?;
        let kth = self.experts - self.top_k;
        let inds = ops::argpartition_axis(&scores, kth, -1)?.index((.., .., kth..));
        let top = scores.take_along_axis(&inds, -1)?;
        let weights = ops::softmax_axis(&top, -1, None)?.multiply(self.per_expert_scale.take_axis(&inds, 0)?)?;
        let y = self.switch_glu.forward(&self.pre_feedforward_layernorm_2.forward(h)?, &inds)?;
        let y = y.multiply(weights.expand_dims(-1)?)?.sum_axis(-2, None)?;
        self.post_feedforward_layernorm_2.forward(&y)
    }
}

/// The small models' per-layer input: gate(h) times the layer's vector, projected back.
struct PerLayer {
    gate: Linear,
    projection: Linear,
    norm: RmsNorm,
}

struct Block {
    kind_full: bool,
    self_attn: Attn,
    mlp: Mlp,
    experts: Option<Box<Experts>>,
    per_layer: Option<PerLayer>,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
    layer_scalar: Array,
}

/// The model-level parts of the per-layer inputs.
struct PerLayerInputs {
    embed: Embedding,
    projection: Linear,
    norm: RmsNorm,
    width: i32,
}

pub struct Model {
    config: Config,
    embed_tokens: Embedding,
    per_layer_inputs: Option<PerLayerInputs>,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    /// For each layer, the layer whose keys and values it uses (itself unless shared).
    kv_source: Vec<usize>,
}

impl Model {
    pub fn load(config: Config, w: Weights) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let mut w = w.text_model_only("");
        let (h, eps, n) = (c.hidden_size, c.rms_norm_eps, c.num_hidden_layers);
        let kinds = c.layer_kinds();
        let first_shared = c.first_shared();
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, h)?;
        let hp = c.hidden_size_per_layer_input;
        let per_layer_inputs = if hp > 0 {
            let vocab = c.vocab_size_per_layer_input.unwrap_or(c.vocab_size);
            Some(PerLayerInputs {
                embed: Embedding::load(&mut w, "model.embed_tokens_per_layer", vocab, n * hp)?,
                projection: Linear::load(&mut w, "model.per_layer_model_projection", n * hp, h, false)?,
                norm: RmsNorm::load(&mut w, "model.per_layer_projection_norm", hp, eps)?,
                width: hp,
            })
        } else {
            None
        };
        let mut layers = Vec::new();
        for i in 0..n {
            let p = format!("model.layers.{i}");
            let kind = kinds[i as usize].as_str();
            let shared = i >= first_shared && first_shared > 0 && c.num_kv_shared_layers > 0;
            let wide = if c.use_double_wide_mlp && shared { 2 } else { 1 };
            let experts = if c.enable_moe_block {
                let (e, k, mi) = (c.num_experts.unwrap_or(0), c.top_k_experts.unwrap_or(0), c.moe_intermediate_size.unwrap_or(0));
                let r = format!("{p}.router");
                let scale = w.take_shaped(&format!("{r}.scale"), &[h])?;
                let root = mlx_rs::array!((h as f32).powf(-0.5)).as_dtype(scale.dtype())?;
                Some(Box::new(Experts {
                    proj: Linear::load(&mut w, &format!("{r}.proj"), e, h, false)?,
                    scale: scale.multiply(root)?,
                    per_expert_scale: w.take_shaped(&format!("{r}.per_expert_scale"), &[e])?,
                    switch_glu: SwitchGlu::load(&mut w, &format!("{p}.experts.switch_glu"), e, h, mi, false, Glu::GeluTanh)?,
                    top_k: k,
                    experts: e,
                    eps,
                    pre_feedforward_layernorm_2: RmsNorm::load(&mut w, &format!("{p}.pre_feedforward_layernorm_2"), h, eps)?,
                    post_feedforward_layernorm_1: RmsNorm::load(&mut w, &format!("{p}.post_feedforward_layernorm_1"), h, eps)?,
                    post_feedforward_layernorm_2: RmsNorm::load(&mut w, &format!("{p}.post_feedforward_layernorm_2"), h, eps)?,
                }))
            } else {
                None
            };
            let per_layer = if hp > 0 {
                Some(PerLayer {
                    gate: Linear::load(&mut w, &format!("{p}.per_layer_input_gate"), hp, h, false)?,
                    projection: Linear::load(&mut w, &format!("{p}.per_layer_projection"), h, hp, false)?,
                    norm: RmsNorm::load(&mut w, &format!("{p}.post_per_layer_input_norm"), h, eps)?,
                })
            } else {
                None
            };
            // Shared layers' own K/V weights, if a checkpoint ships them, are unused.
            if i >= first_shared {
                for extra in ["k_proj", "v_proj", "k_norm"] {
                    for s in ["weight", "scales", "biases"] {
                        let _ = w.take(&format!("{p}.self_attn.{extra}.{s}"));
                    }
                }
            }
            layers.push(Block {
                kind_full: kind == "full_attention",
                self_attn: Attn::load(&mut w, &format!("{p}.self_attn"), c, i, kind)?,
                mlp: Mlp::load(&mut w, &format!("{p}.mlp"), h, c.intermediate_size * wide)?,
                experts,
                per_layer,
                input_layernorm: RmsNorm::load(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
                post_attention_layernorm: RmsNorm::load(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
                pre_feedforward_layernorm: RmsNorm::load(&mut w, &format!("{p}.pre_feedforward_layernorm"), h, eps)?,
                post_feedforward_layernorm: RmsNorm::load(&mut w, &format!("{p}.post_feedforward_layernorm"), h, eps)?,
                layer_scalar: w.take_shaped(&format!("{p}.layer_scalar"), &[1])?,
            });
        }
        let norm = RmsNorm::load(&mut w, "model.norm", h, eps)?;
        let lm_head = if c.tie_word_embeddings {
            let _ = w.take("lm_head.weight");
            None
        } else {
            Some(Linear::load(&mut w, "lm_head", c.vocab_size, h, false)?)
        };
        // Shared layers take the K/V of the last non-shared layer of their kind.
        let mut kv_source: Vec<usize> = (0..n as usize).collect();
        for j in first_shared.max(0) as usize..n as usize {
            kv_source[j] = (0..first_shared as usize).rev().find(|&i| kinds[i] == kinds[j]).unwrap_or(j);
        }
        w.finish(&["rotary_emb", "input_max", "input_min", "output_max", "output_min"])?;
        Ok(Model { config, embed_tokens, per_layer_inputs, layers, norm, lm_head, kv_source })
    }

    /// Each layer's per-token input vectors: [B, L, layers, width].
    fn per_layer_vectors(&self, tokens: &Array, h: &Array) -> Result<Option<Array>> {
        let Some(p) = &self.per_layer_inputs else { return Ok(None) };
        let (b, l) = (tokens.shape()[0], tokens.shape()[1]);
        let n = self.layers.len() as i32;
        let c = |v: f32| mlx_rs::array!(v).as_dtype(h.dtype());
        let from_ids = p.embed.forward(tokens)?.multiply(c((p.width as f32).sqrt())?)?.reshape(&[b, l, n, p.width])?;
        let projected = p.projection.forward(h)?.multiply(c((self.config.hidden_size as f32).powf(-0.5))?)?;
        let projected = p.norm.forward(&projected.reshape(&[b, l, n, p.width])?)?;
        Ok(Some(projected.add(from_ids)?.multiply(c(0.5f32.sqrt())?)?))
    }
}

impl Model {
    /// One sequence's pass (KV-shared layers read the rows' own caches).
    fn run(&self, input: Input, cache: &mut [Cache], head: Head) -> Result<Output> {
        let owned = self.config.first_shared() as usize;
        if cache.len() != owned {
            return Err(cfg_err(format!("{} caches for the {owned} layers that keep K/V", cache.len())));
        }
        let (_, l) = input.dims()?;
        let e = input.embed(self.config.hidden_size, |t| self.embed_tokens.forward(t))?;
        let mut h = e.multiply(mlx_rs::array!((self.config.hidden_size as f32).sqrt()).as_dtype(e.dtype())?)?;
        let per_layer = self.per_layer_vectors(input.tokens, &h)?;
        // One mask per kind of layer, from the first cache of that kind.
        let masks = LayerMasks::build(l, self.layers.iter().map(|x| !x.kind_full).zip(cache.iter_mut()))?;
        let mut kvs: Vec<Option<(Array, Array, i32)>> = vec![None; self.layers.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = masks.get(!layer.kind_full)?;
            let src = self.kv_source[i];
            let (a, kv) = if src == i {
                let c = cache.get_mut(i).ok_or_else(|| cfg_err("a layer with K/V has no cache"))?;
                layer.self_attn.forward(&layer.input_layernorm.forward(&h)?, mask, Some(c.as_kv()?), None)?
            } else {
                layer.self_attn.forward(&layer.input_layernorm.forward(&h)?, mask, None, kvs[src].as_ref())?
            };
            kvs[i] = Some(kv);
            h = h.add(layer.post_attention_layernorm.forward(&a)?)?;
            let dense = layer.mlp.forward(&layer.pre_feedforward_layernorm.forward(&h)?)?;
            let f = match &layer.experts {
                Some(ex) => ex.post_feedforward_layernorm_1.forward(&dense)?.add(ex.route_and_run(&h)?)?,
                None => dense,
            };
            h = h.add(layer.post_feedforward_layernorm.forward(&f)?)?;
            if let (Some(pl), Some(v)) = (&layer.per_layer, &per_layer) {
                let g = gelu_tanh_mul(&pl.gate.forward(&h)?, &v.index((.., .., i as i32, ..)))?;
                h = h.add(pl.norm.forward(&pl.projection.forward(&g)?)?)?;
            }
            h = h.multiply(&layer.layer_scalar)?;
        }
        let h = self.norm.forward(&head.positions(&h)?)?;
        if head == Head::Hidden {
            return Ok(Output::Hidden(h));
        }
        let mut logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.embed_tokens.as_linear(&h)?,
        };
        if let Some(cap) = self.config.final_logit_softcapping {
            let cap = mlx_rs::array!(cap).as_dtype(logits.dtype())?;
            logits = ops::tanh(logits.divide(&cap)?)?.multiply(&cap)?;
        }
        Ok(Output::Logits(head.shape_logits(logits)?))
    }
}

impl LanguageModel for Model {
    fn embed_tokens(&self, tokens: &Array) -> Result<Array> {
        self.embed_tokens.forward(tokens)
    }

    fn forward(&self, input: Input, ctx: &mut ForwardCtx) -> Result<Output> {
        ctx.each_row(input, |input, cache, head| self.run(input, cache, head))
    }

    /// Caches for the layers that compute K/V only: KV-shared layers read
    /// the cache of the layer they share with.
    fn new_cache(&self) -> Vec<Cache> {
        let w = self.config.sliding_window;
        self.layers
            .iter()
            .take(self.config.first_shared() as usize)
            .map(|l| if l.kind_full { Cache::kv() } else { Cache::windowed(w) })
            .collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo::new(&self.config.model_type, self.config.vocab_size, self.config.hidden_size, self.config.num_hidden_layers, self.config.max_position_embeddings)
    }
}
