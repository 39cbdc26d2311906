//! Rotary position embeddings: plain, Llama-3 frequency scaling, linear
//! scaling, and Phi-3's LongRoPE, all through MLX's fused `fast::rope`.

use super::cfg_err;
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

