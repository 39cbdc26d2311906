//! Quality checks on a loaded model, so a change to the numerics (a quantized
//! KV cache, re-quantized weights, a fused kernel) reports what it costs:
//! windowed perplexity over a text, computed as mlx-lm's `perplexity` module
//! does (each window on its own, every position predicting the next token,
//! the mean of all token losses, a standard error by the delta method).

use crate::error::{Error, Result};
use crate::models::cache::{quantize_kv, KvQuant};
use crate::models::nn::layers::token_array;
use crate::models::{Head, LanguageModel};
use mlx_rs::ops::indexing::take_along_axis;
use mlx_rs::Array;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Perplexity {
    pub perplexity: f64,
    /// The standard error of the perplexity (mlx-lm's ± figure).
    pub standard_error: f64,
    /// Tokens whose loss counts (windows × (window - 1)).
    pub tokens: usize,
    pub windows: usize,
    pub window: usize,
    pub seconds: f64,
}

/// The token loss (negative log-likelihood of each next token) of every
/// position of one window, through a fresh cache of the model's own kind.
fn window_losses(model: &dyn LanguageModel, ids: &[u32], kv_quant: Option<KvQuant>) -> Result<Vec<f32>> {
    let n = ids.len();
    let mut cache = quantize_kv(model.new_cache(), kv_quant);
    let logits = model.logits(&token_array(&ids[..n - 1]), &mut cache, Head::All)?.as_dtype(mlx_rs::Dtype::Float32)?;
    let targets = token_array(&ids[1..]).expand_dims(-1)?;
    let picked = take_along_axis(&logits, &targets, -1)?.squeeze_axes(&[-1])?;
    let losses: Array = logits.logsumexp_axis(-1, false)?.subtract(&picked)?;
    mlx_rs::transforms::eval([&losses])?;
    Ok(losses.as_slice::<f32>().to_vec())
}

/// Perplexity of `tokens` cut into windows of `window` tokens (the tail
/// shorter than a window is left out, as mlx-lm does), the first
/// `max_windows` of them if given; with `kv_quant`, through quantized KV
/// caches (what a quantized cache costs in quality).
pub fn perplexity(model: &dyn LanguageModel, tokens: &[u32], window: usize, max_windows: Option<usize>, kv_quant: Option<KvQuant>) -> Result<Perplexity> {
    if window < 2 {
        return Err(Error::InvalidArgument("a perplexity window needs at least 2 tokens".into()));
    }
    let mut windows = tokens.len() / window;
    if let Some(m) = max_windows {
        windows = windows.min(m);
    }
    if windows == 0 {
        return Err(Error::InvalidArgument(format!("the text has {} tokens, fewer than one window of {window}", tokens.len())));
    }
    let started = Instant::now();
    let mut losses: Vec<f64> = Vec::with_capacity(windows * (window - 1));
    for w in tokens.chunks_exact(window).take(windows) {
        losses.extend(window_losses(model, w, kv_quant)?.into_iter().map(f64::from));
    }
    let n = losses.len() as f64;
    let mean = losses.iter().sum::<f64>() / n;
    if !mean.is_finite() {
        return Err(Error::Mlx("the model's losses are not finite".into()));
    }
    let var = losses.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let perplexity = mean.exp();
    Ok(Perplexity {
        perplexity,
        standard_error: perplexity * var.sqrt() / n.sqrt(),
        tokens: losses.len(),
        windows,
        window,
        seconds: started.elapsed().as_secs_f64(),
    })
}
