//! Llama architecture (Llama 2/3.x, SmolLM2, Mistral): pre-norm decoder blocks
//! with grouped-query attention, RoPE and a SwiGLU MLP.

use super::{cfg_err, last_position, ArchInfo, Embedding, LanguageModel, Linear, RmsNorm, Weights};
use crate::engine::kv_cache::KvCache;
use crate::error::Result;
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f32>,
    #[serde(default)]
    pub low_freq_factor: Option<f32>,
    #[serde(default)]
    pub high_freq_factor: Option<f32>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f32>,
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
    pub fn head_dim(&self) -> i32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    pub fn kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// RoPE as used by Llama: non-interleaved halves, optional Llama-3 frequency scaling.
pub struct Rope {
    dims: i32,
    base: Option<f32>,
    scale: f32,
    freqs: Option<Array>,
    /// Multiplies q and k before rotation (Phi-3's LongRoPE "mscale").
    input_scale: Option<Array>,
}

impl Rope {
    pub fn new(dims: i32, base: f32, scaling: Option<&RopeScaling>) -> Result<Self> {
        let Some(s) = scaling else {
            return Ok(Rope { dims, base: Some(base), scale: 1.0, freqs: None, input_scale: None });
        };
        match s.rope_type.as_deref() {
            Some("llama3") => {
                let factor = s.factor.unwrap_or(8.0);
                let low = s.low_freq_factor.unwrap_or(1.0);
                let high = s.high_freq_factor.unwrap_or(4.0);
                let old_ctx = s.original_max_position_embeddings.unwrap_or(8192.0);
                let low_wl = old_ctx / low;
                let high_wl = old_ctx / high;
                let freqs: Vec<f32> = (0..dims / 2)
                    .map(|i| {
                        let f = base.powf(2.0 * i as f32 / dims as f32);
                        let wavelen = 2.0 * std::f32::consts::PI * f;
                        if wavelen > low_wl {
                            f * factor
                        } else if wavelen < high_wl {
                            f
                        } else {
                            let smooth = (old_ctx / wavelen - low) / (high - low);
                            f / ((1.0 - smooth) / factor + smooth)
                        }
                    })
                    .collect();
                let n = freqs.len() as i32;
                Ok(Rope { dims, base: None, scale: 1.0, freqs: Some(Array::from_slice(&freqs, &[n])), input_scale: None })
            }
            Some("linear") => Ok(Rope {
                dims,
                base: Some(base),
                scale: 1.0 / s.factor.unwrap_or(1.0),
                freqs: None,
                input_scale: None,
            }),
            Some("default") | None => Ok(Rope { dims, base: Some(base), scale: 1.0, freqs: None, input_scale: None }),
            Some(other) => Err(cfg_err(format!("unsupported rope_scaling type '{other}'"))),
        }
    }

    /// LongRoPE as mlx-lm runs it: frequencies scaled by `long_factor`, inputs by `mscale`.
    pub fn long_rope(dims: i32, base: f32, long_factor: &[f32], mscale: f32) -> Result<Self> {
        if long_factor.len() as i32 != dims / 2 {
            return Err(cfg_err(format!("rope_scaling.long_factor has {} entries, expected {}", long_factor.len(), dims / 2)));
        }
        let freqs: Vec<f32> =
            long_factor.iter().enumerate().map(|(i, f)| f * base.powf(2.0 * i as f32 / dims as f32)).collect();
        Ok(Rope {
            dims,
            base: None,
            scale: 1.0,
            freqs: Some(Array::from_slice(&freqs, &[dims / 2])),
            input_scale: (mscale != 1.0).then(|| mlx_rs::array!(mscale)),
        })
    }

    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        let scaled;
        let x = match &self.input_scale {
            Some(s) => {
                scaled = x.multiply(s.as_dtype(x.dtype())?)?;
                &scaled
            }
            None => x,
        };
        Ok(fast::rope(x, self.dims, false, self.base, self.scale, offset, self.freqs.as_ref())?)
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

/// Grouped-query attention over a KV cache; shared by the llama-like families
/// and Gemma 3 (which sets per-head norms, its own scale and, on local layers, a window).
pub(crate) struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    pub(crate) n_heads: i32,
    pub(crate) n_kv: i32,
    pub(crate) head_dim: i32,
    pub(crate) scale: f32,
    /// Sliding window: a query sees only the last `window` positions.
    pub(crate) window: Option<i32>,
}

impl Attention {
    fn load(w: &mut Weights, p: &str, c: &Config, v: Variant) -> Result<Self> {
        let (h, nh, nkv, hd) = (c.hidden_size, c.num_attention_heads, c.kv_heads(), c.head_dim());
        let qkv_bias = c.attention_bias || v.qkv_bias;
        let norm = |w: &mut Weights, n: &str| -> Result<Option<RmsNorm>> {
            if v.qk_norm {
                Ok(Some(RmsNorm::load(w, &format!("{p}.{n}"), hd, c.rms_norm_eps)?))
            } else {
                Ok(None)
            }
        };
        Ok(Attention {
            q_proj: Linear::load(w, &format!("{p}.q_proj"), nh * hd, h, qkv_bias)?,
            k_proj: Linear::load(w, &format!("{p}.k_proj"), nkv * hd, h, qkv_bias)?,
            v_proj: Linear::load(w, &format!("{p}.v_proj"), nkv * hd, h, qkv_bias)?,
            o_proj: Linear::load(w, &format!("{p}.o_proj"), h, nh * hd, c.attention_bias)?,
            q_norm: norm(w, "q_norm")?,
            k_norm: norm(w, "k_norm")?,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            scale: (hd as f32).powf(-0.5),
            window: None,
        })
    }

    pub(crate) fn forward(&self, x: &Array, cache: &mut KvCache, rope: &Rope) -> Result<Array> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        // [B, L, n*D] -> [B, n, L, D]; the per-head norm (Qwen3) runs before the
        // transpose, on contiguous rows, which is what the fused rms_norm wants.
        let heads = |a: Array, n: i32, norm: Option<&RmsNorm>| -> Result<Array> {
            let a = a.reshape(&[b, l, n, self.head_dim])?;
            let a = match norm {
                Some(nm) => nm.forward(&a)?,
                None => a,
            };
            Ok(a.transpose_axes(&[0, 2, 1, 3])?)
        };
        let q = heads(self.q_proj.forward(x)?, self.n_heads, self.q_norm.as_ref())?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv, self.k_norm.as_ref())?;
        let v = heads(self.v_proj.forward(x)?, self.n_kv, None)?;
        let offset = cache.offset();
        let q = rope.apply(&q, offset)?;
        let k = rope.apply(&k, offset)?;
        let (k, v) = cache.update_and_fetch(&k, &v)?;
        let (start, end) = (cache.start(), cache.offset());
        let mask_array;
        let mask = match self.window {
            Some(w) if end - start > w => {
                // Query at q sees keys k with k <= q and q - k < window.
                let qpos = mlx_rs::ops::arange::<_, i32>(offset, end, None)?.reshape(&[l, 1])?;
                let kpos = mlx_rs::ops::arange::<_, i32>(start, end, None)?.reshape(&[1, end - start])?;
                let causal = kpos.le(&qpos)?;
                let near = qpos.subtract(&kpos)?.lt(mlx_rs::array!(w))?;
                mask_array = causal.logical_and(&near)?;
                Some(ScaledDotProductAttentionMask::Array(&mask_array))
            }
            _ => (l > 1).then_some(ScaledDotProductAttentionMask::Causal),
        };
        let o = fast::scaled_dot_product_attention(&q, &k, &v, self.scale, mask, None)?;
        let o = o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj.forward(&o)
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(w: &mut Weights, p: &str, c: &Config) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(w, &format!("{p}.gate_proj"), i, h, c.mlp_bias)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj"), i, h, c.mlp_bias)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj"), h, i, c.mlp_bias)?,
        })
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        let h = super::swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

struct Block {
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
        Self::load_variant(config, w, Variant::default())
    }

    pub fn load_variant(config: Config, mut w: Weights, variant: Variant) -> Result<Self> {
        let c = &config;
        if c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.num_hidden_layers <= 0 || c.vocab_size <= 0 {
            return Err(cfg_err("sizes in config.json must be positive"));
        }
        if c.num_attention_heads % c.kv_heads() != 0 {
            return Err(cfg_err("num_attention_heads must be a multiple of num_key_value_heads"));
        }
        let embed_tokens = Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, c.hidden_size)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                self_attn: Attention::load(&mut w, &format!("{p}.self_attn"), c, variant)?,
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
        Ok(Model { config, embed_tokens, layers, norm, lm_head, rope })
    }
}

impl Model {
    /// Replaces the positional encoding (Phi-3's LongRoPE).
    pub fn set_rope(&mut self, rope: Rope) {
        self.rope = rope;
    }
}

impl LanguageModel for Model {
    fn forward(&self, tokens: &Array, cache: &mut [KvCache], all_logits: bool) -> Result<Array> {
        let mut h = self.embed_tokens.forward(tokens)?;
        for (layer, c) in self.layers.iter().zip(cache.iter_mut()) {
            let a = layer.self_attn.forward(&layer.input_layernorm.forward(&h)?, c, &self.rope)?;
            h = h.add(a)?;
            let m = layer.mlp.forward(&layer.post_attention_layernorm.forward(&h)?)?;
            h = h.add(m)?;
        }
        if !all_logits {
            h = last_position(&h)?;
        }
        let h = self.norm.forward(&h)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.embed_tokens.as_linear(&h)?,
        };
        if all_logits {
            Ok(logits)
        } else {
            Ok(logits.reshape(&[1, -1])?)
        }
    }

    fn new_cache(&self) -> Vec<KvCache> {
        (0..self.layers.len()).map(|_| KvCache::new()).collect()
    }

    fn info(&self) -> ArchInfo {
        ArchInfo {
            architecture: self.config.model_type.clone(),
            vocab_size: self.config.vocab_size as usize,
            hidden_size: self.config.hidden_size as usize,
            num_layers: self.config.num_hidden_layers as usize,
            max_position_embeddings: self.config.max_position_embeddings as usize,
        }
    }
}
