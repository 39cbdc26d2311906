//! Rotary position embeddings: plain, Llama-3 frequency scaling, linear
//! scaling, and Phi-3's LongRoPE, all through MLX's fused `fast::rope`.

use crate::models::cfg_err;
use crate::error::Result;
use mlx_rs::fast;
use mlx_rs::Array;
use serde::Deserialize;

/// `rope_scaling` from config.json.
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
    /// YaRN's correction range (in rotations) and attention temperature.
    #[serde(default)]
    pub beta_fast: Option<f32>,
    #[serde(default)]
    pub beta_slow: Option<f32>,
    #[serde(default)]
    pub mscale: Option<f32>,
    #[serde(default)]
    pub mscale_all_dim: Option<f32>,
}

/// RoPE as used by Llama: non-interleaved halves, optional Llama-3 frequency scaling.
pub struct Rope {
    dims: i32,
    base: Option<f32>,
    scale: f32,
    freqs: Option<Array>,
    /// Multiplies q and k before rotation (Phi-3's LongRoPE "mscale").
    input_scale: Option<Array>,
    /// The rotation per position of each pair and the input scale as a
    /// number, for fused kernels (`rotation`), made on first use.
    inv: std::cell::OnceCell<(Array, f32)>,
}

impl Rope {
    pub fn new(dims: i32, base: f32, scaling: Option<&RopeScaling>) -> Result<Self> {
        let Some(s) = scaling else {
            return Ok(Rope { dims, base: Some(base), scale: 1.0, freqs: None, input_scale: None, inv: Default::default() });
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
                Ok(Rope { dims, base: None, scale: 1.0, freqs: Some(Array::from_slice(&freqs, &[n])), input_scale: None, inv: Default::default() })
            }
            Some("linear") => Ok(Rope {
                dims,
                base: Some(base),
                scale: 1.0 / s.factor.unwrap_or(1.0),
                freqs: None,
                input_scale: None,
                inv: Default::default(),
            }),
            Some("yarn") => Self::yarn(dims, base, s),
            Some("default") | None => Ok(Rope { dims, base: Some(base), scale: 1.0, freqs: None, input_scale: None, inv: Default::default() }),
            Some(other) => Err(cfg_err(format!("unsupported rope_scaling type '{other}'"))),
        }
    }

    /// YaRN (gpt-oss) as mlx-lm's `YarnRoPE`: frequencies blended between the
    /// original and the `factor`-stretched ones over the correction range, and
    /// q, k scaled by the attention temperature `mscale`.
    fn yarn(dims: i32, base: f32, s: &RopeScaling) -> Result<Self> {
        let factor = s.factor.unwrap_or(1.0);
        let orig = s.original_max_position_embeddings.unwrap_or(4096.0);
        let (beta_fast, beta_slow) = (s.beta_fast.unwrap_or(32.0), s.beta_slow.unwrap_or(1.0));
        if !(factor.is_finite() && factor > 0.0 && orig > 0.0 && base > 1.0 && beta_fast > 0.0 && beta_slow > 0.0) {
            return Err(cfg_err("rope_scaling (yarn): factor, original_max_position_embeddings and betas must be positive"));
        }
        let correction_dim =
            |rotations: f32| dims as f32 * (orig / (rotations * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln());
        let low = correction_dim(beta_fast).floor().max(0.0);
        let mut high = correction_dim(beta_slow).ceil().min(dims as f32 - 1.0);
        if low == high {
            high += 0.001;
        }
        let get_mscale = |m: f32| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
        let mscale = get_mscale(s.mscale.unwrap_or(1.0)) / get_mscale(s.mscale_all_dim.unwrap_or(0.0));
        let freqs: Vec<f32> = (0..dims / 2)
            .map(|i| {
                let extra = base.powf((2 * i) as f32 / dims as f32);
                let inter = factor * extra;
                let mask = 1.0 - ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                (inter * extra) / (inter * mask + extra * (1.0 - mask))
            })
            .collect();
        Ok(Rope {
            dims,
            base: None,
            scale: 1.0,
            freqs: Some(Array::from_slice(&freqs, &[dims / 2])),
            input_scale: (mscale != 1.0).then(|| mlx_rs::array!(mscale)),
            inv: Default::default(),
        })
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
            inv: Default::default(),
        })
    }

    /// Gemma 4's "proportional" RoPE: the first `rotated` of `dims` dimensions
    /// rotate with periods `factor * base^(2i / dims)` (the exponent over the
    /// whole head), the rest not at all (an infinite period).
    pub fn proportional(dims: i32, rotated: i32, base: f32, factor: f32) -> Result<Self> {
        if rotated > dims || rotated < 0 || dims % 2 != 0 {
            return Err(cfg_err(format!("partial_rotary_factor gives {rotated} rotated of {dims} dims")));
        }
        let freqs: Vec<f32> = (0..dims / 2)
            .map(|i| if 2 * i < rotated { factor * base.powf(2.0 * i as f32 / dims as f32) } else { f32::INFINITY })
            .collect();
        Ok(Rope { dims, base: None, scale: 1.0, freqs: Some(Array::from_slice(&freqs, &[dims / 2])), input_scale: None, inv: Default::default() })
    }

    /// No rotation at all (SmolLM3's NoPE layers).
    pub fn identity() -> Self {
        Rope { dims: 0, base: None, scale: 1.0, freqs: None, input_scale: None, inv: Default::default() }
    }

    /// For kernels that rotate inside a larger fused step: the angle per
    /// position of each rotated pair ([dims / 2] float32), as MLX's rope
    /// computes it (`scale / freqs[i]`, or `scale * base^(-2i/dims)`), and
    /// the factor the input is multiplied by first (1 for most). None unless
    /// this RoPE rotates whole heads of `head_dim`.
    pub fn rotation(&self, head_dim: i32) -> Option<(&Array, f32)> {
        if self.dims == 0 || self.dims != head_dim {
            return None;
        }
        let (inv, input_scale) = self.inv.get_or_init(|| {
            let half = self.dims / 2;
            let v: Vec<f32> = match (&self.freqs, self.base) {
                (Some(f), _) => f.as_slice::<f32>().iter().map(|f| self.scale / f).collect(),
                (None, Some(base)) => (0..half)
                    .map(|i| (self.scale as f64 * (base as f64).powf(-2.0 * i as f64 / self.dims as f64)) as f32)
                    .collect(),
                (None, None) => vec![0.0; half as usize],
            };
            let input_scale = self.input_scale.as_ref().map_or(1.0, |s| s.as_slice::<f32>().first().copied().unwrap_or(1.0));
            (Array::from_slice(&v, &[half]), input_scale)
        });
        Some((inv, *input_scale))
    }

    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        if self.dims == 0 {
            return Ok(x.clone());
        }
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

    /// `apply` for several sequences at their own positions: `x` is
    /// [B, heads, L, D] and `positions` [B] (int32) each row's first position.
    pub fn apply_rows(&self, x: &Array, positions: &Array) -> Result<Array> {
        if self.dims == 0 {
            return Ok(x.clone());
        }
        let scaled;
        let x = match &self.input_scale {
            Some(s) => {
                scaled = x.multiply(s.as_dtype(x.dtype())?)?;
                &scaled
            }
            None => x,
        };
        Ok(fast::rope_dynamic(x, self.dims, false, self.base, self.scale, positions, self.freqs.as_ref())?)
    }
}

