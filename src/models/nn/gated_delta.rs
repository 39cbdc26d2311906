//! The gated delta rule (Gated DeltaNet, the linear attention of Qwen3-Next
//! and Qwen3.5), as mlx-lm's `gated_delta.py` defines it:
//!
//! ```text
//! S_t = g_t * S_{t-1}                       (decay, g_t = exp(-exp(A_log) * softplus(a_t + dt_bias)))
//! S_t = S_t + beta_t * (v_t - S_t k_t) k_t^T (delta-rule write, beta_t = sigmoid(b_t))
//! y_t = S_t q_t
//! ```
//!
//! with the state S [B, Hv, Dv, Dk] in float32. Three ways to run it, which
//! agree to float tolerance (unit tests below; the CUDA kernel on the GPU run):
//! - `recurrent`: one token at a time from MLX ops (decode, short prompts);
//! - `chunked`: prefill in chunks of `CHUNK` tokens (the WY form of the
//!   delta rule): within a chunk everything is a few batched matmuls, only the
//!   chunks run in sequence, so a 2048-token prompt takes 32 steps, not 2048;
//! - `kernels::cuda::delta::run`: one custom kernel over all tokens on CUDA.

use crate::error::Result;
use mlx_rs::ops::indexing::{Ellipsis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

/// Tokens per chunk of the chunked form (a power of two: the triangular
/// inverse below doubles its block size up to it).
pub const CHUNK: i32 = 64;

/// Prompts at least this long take the chunked form; shorter ones (and
/// decode) step token by token.
pub const CHUNK_FROM: i32 = 16;

/// L2-normalises q and k over the head dimension and folds the `Dk^-0.5`
/// readout scale into q (mlx-lm's `normalize_qk`, with its eps 1e-6 added to
/// the sum of squares).
pub fn normalize_qk(q: &Array, k: &Array, dk: i32) -> Result<(Array, Array)> {
    let inv_scale = (dk as f32).powf(-0.5);
    let rms_eps = 1e-6 * inv_scale * inv_scale;
    let q = mlx_rs::fast::rms_norm(q, None::<&Array>, rms_eps)?;
    let k = mlx_rs::fast::rms_norm(k, None::<&Array>, rms_eps)?;
    let c = |v: f32, like: &Array| mlx_rs::array!(v).as_dtype(like.dtype());
    Ok((q.multiply(c(inv_scale * inv_scale, &q)?)?, k.multiply(c(inv_scale, &k)?)?))
}

/// The log of the per-token decay: `-exp(A_log) * softplus(a + dt_bias)`,
/// float32, [B, T, Hv].
pub fn log_decay(a_log: &Array, a: &Array, dt_bias: &Array) -> Result<Array> {
    let x = a.add(dt_bias)?;
    let softplus = ops::logaddexp(&x, mlx_rs::array!(0.0f32).as_dtype(x.dtype())?)?;
    Ok(ops::exp(a_log.as_dtype(Dtype::Float32)?)?.negative()?.multiply(softplus)?)
}

/// Runs the recurrence over `T` tokens from `state` (None = zeros).
/// q, k: [B, T, Hk, Dk]; v: [B, T, Hv, Dv]; g_log, beta: [B, T, Hv].
/// Returns y [B, T, Hv, Dv] (in q's type) and the new state (float32).
pub fn update(q: &Array, k: &Array, v: &Array, g_log: &Array, beta: &Array, state: Option<&Array>) -> Result<(Array, Array)> {
    let (b, t, _, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hv, dv) = (v.shape()[2], v.shape()[3]);
    let state = match state {
        Some(s) => s.clone(),
        None => ops::zeros::<f32>(&[b, hv, dv, dk])?,
    };
    if let Some(out) = crate::models::kernels::cuda::delta::run(q, k, v, g_log, beta, &state)? {
        return Ok(out);
    }
    if let Some(out) = crate::models::kernels::metal::delta::run(q, k, v, g_log, beta, &state)? {
        return Ok(out);
    }
    if t >= CHUNK_FROM {
        chunked(q, k, v, g_log, beta, &state)
    } else {
        recurrent(q, k, v, g_log, beta, &state)
    }
}

/// Repeats the Hk query/key heads to the Hv value heads (grouped heads).
fn repeat_heads(x: &Array, hv: i32) -> Result<Array> {
    let hk = x.shape()[2];
    if hk == hv {
        return Ok(x.clone());
    }
    Ok(Array::repeat_axis::<f32>(x.clone(), hv / hk, 2)?)
}

/// Token by token (mlx-lm's `gated_delta_ops`).
pub fn recurrent(q: &Array, k: &Array, v: &Array, g_log: &Array, beta: &Array, state: &Array) -> Result<(Array, Array)> {
    let hv = v.shape()[2];
    let (q, k) = (repeat_heads(q, hv)?, repeat_heads(k, hv)?);
    let g = ops::exp(g_log)?;
    let mut s = state.clone();
    let mut ys = Vec::new();
    for t in 0..q.shape()[1] {
        let (qt, kt, vt) = (q.index((.., t)), k.index((.., t)), v.index((.., t)));
        let (gt, bt) = (g.index((.., t)), beta.index((.., t)));
        // [B, H] -> [B, H, 1, 1]; k, q as rows [B, H, 1, Dk]; v, delta as columns.
        s = s.multiply(gt.expand_dims_axes(&[-1, -2])?)?;
        let kr = kt.expand_dims(-2)?;
        let kv_mem = s.multiply(&kr)?.sum_axis(-1, None)?;
        let delta = vt.subtract(&kv_mem)?.multiply(bt.expand_dims(-1)?)?;
        s = s.add(kr.multiply(delta.expand_dims(-1)?)?)?;
        let y = s.multiply(qt.expand_dims(-2)?)?.sum_axis(-1, None)?;
        ys.push(y.as_dtype(q.dtype())?);
    }
    Ok((ops::stack(&ys, 1)?, s))
}

/// Inverse of unit lower-triangular matrices [..., C, C] (C a power of two)
/// by doubling the block size: with A, D the inverses of the two diagonal
/// halves and C the block below, the inverse is [[A, 0], [-D C A, D]].
/// log2(C) rounds of batched matmuls, as stable as forward substitution.
fn unit_lower_inverse(l: &Array) -> Result<Array> {
    let shape = l.shape().to_vec();
    let n = shape.len();
    let c = shape[n - 1];
    let batch = &shape[..n - 2];
    let with = |tail: &[i32]| -> Vec<i32> { batch.iter().copied().chain(tail.iter().copied()).collect() };
    // Inverses of the diagonal blocks of size s: [..., C/s, s, s].
    let mut inv = ops::ones_dtype(&with(&[c, 1, 1]), l.dtype())?;
    let mut s = 1;
    while s < c {
        let nb = c / (2 * s);
        // L's diagonal blocks of size 2s: [..., nb, 2s, nb, 2s] -> diagonal over the block axes.
        let blocks = l.reshape(&with(&[nb, 2 * s, nb, 2 * s]))?;
        let k = batch.len() as i32;
        let diag = blocks.diagonal(0, k, k + 2)?; // [..., 2s, 2s, nb]
        let perm: Vec<i32> = (0..k).chain([k + 2, k, k + 1]).collect();
        let diag = diag.transpose_axes(&perm)?; // [..., nb, 2s, 2s]
        let below = diag.index((Ellipsis, s.., ..s));
        let pairs = inv.reshape(&with(&[nb, 2, s, s]))?;
        let a = pairs.index((Ellipsis, 0, .., ..));
        let d = pairs.index((Ellipsis, 1, .., ..));
        let x = d.matmul(&below)?.matmul(&a)?.negative()?;
        let zeros = ops::zeros_like(&a)?;
        let top = ops::concatenate(&[a, zeros], -1)?;
        let bottom = ops::concatenate(&[x, d], -1)?;
        inv = ops::concatenate(&[top, bottom], -2)?;
        s *= 2;
    }
    Ok(inv.reshape(&shape)?)
}

/// The chunked (WY) form: per chunk of C tokens, with cumulative log decays
/// G, the intra-chunk system T = (I + tril(diag(beta) K K^T * exp(G_i - G_j), -1))^-1
/// gives U = T (beta V) and W = T (beta K exp(G)); then, chunk after chunk,
/// V' = U - W S, Y = (Q exp(G)) S + (Q K^T * decay) V', and
/// S <- exp(G_last) S + (K exp(G_last - G))^T V'.
pub fn chunked(q: &Array, k: &Array, v: &Array, g_log: &Array, beta: &Array, state: &Array) -> Result<(Array, Array)> {
    let out_dtype = q.dtype();
    let (b, t, dk) = (q.shape()[0], q.shape()[1], q.shape()[3]);
    let (hv, dv) = (v.shape()[2], v.shape()[3]);
    let f32_ = |a: &Array| a.as_dtype(Dtype::Float32);
    // [B, T, H, D] -> [B, H, T, D]
    let heads = |a: Array| a.transpose_axes(&[0, 2, 1, 3]);
    let q = heads(f32_(&repeat_heads(q, hv)?)?)?;
    let k = heads(f32_(&repeat_heads(k, hv)?)?)?;
    let v = heads(f32_(v)?)?;
    let g = f32_(g_log)?.transpose_axes(&[0, 2, 1])?;
    let beta = f32_(beta)?.transpose_axes(&[0, 2, 1])?;
    // Pad to whole chunks: padded tokens have k = v = 0 and no decay, so
    // they leave the state alone.
    let n = (t + CHUNK - 1) / CHUNK;
    let tp = n * CHUNK;
    let pad = |a: Array, d: Option<i32>| -> Result<Array> {
        if tp == t {
            return Ok(a);
        }
        let mut shape = vec![b, hv, tp - t];
        shape.extend(d);
        Ok(ops::concatenate(&[a, ops::zeros::<f32>(&shape)?], 2)?)
    };
    let c = CHUNK;
    let q = pad(q, Some(dk))?.reshape(&[b, hv, n, c, dk])?;
    let k = pad(k, Some(dk))?.reshape(&[b, hv, n, c, dk])?;
    let v = pad(v, Some(dv))?.reshape(&[b, hv, n, c, dv])?;
    let g = pad(g, None)?.reshape(&[b, hv, n, c])?;
    let beta = pad(beta, None)?.reshape(&[b, hv, n, c])?;
    let gc = g.cumsum(-1, None, None)?;
    // decay[i, j] = exp(G_i - G_j) for j <= i, else 0.
    let lower = ops::tri::<bool>(c, None, Some(0))?;
    let strict = ops::tri::<bool>(c, None, Some(-1))?;
    let diff = gc.expand_dims(-1)?.subtract(gc.expand_dims(-2)?)?;
    let zero = mlx_rs::array!(0.0f32);
    let decay = ops::select(&lower, &ops::exp(ops::select(&lower, &diff, &zero)?)?, &zero)?;
    let k_beta = k.multiply(beta.expand_dims(-1)?)?;
    let v_beta = v.multiply(beta.expand_dims(-1)?)?;
    let kt = k.swap_axes(-1, -2)?;
    let a = ops::select(&strict, &k_beta.matmul(&kt)?.multiply(&decay)?, &zero)?;
    let eye = ops::eye::<f32>(c, None, None)?;
    let tinv = unit_lower_inverse(&a.add(&eye)?)?;
    let u = tinv.matmul(&v_beta)?;
    let w = tinv.matmul(&k_beta.multiply(ops::exp(&gc)?.expand_dims(-1)?)?)?;
    let qk = q.matmul(&kt)?.multiply(&decay)?;
    let q_decayed = q.multiply(ops::exp(&gc)?.expand_dims(-1)?)?;
    let g_last = gc.index((.., .., .., (c - 1)..c)); // [B, H, N, 1]
    let k_tail = k.multiply(ops::exp(g_last.subtract(&gc)?)?.expand_dims(-1)?)?;
    let g_last = ops::exp(&g_last)?;
    // S in [B, H, Dk, Dv] for the matmuls; mlx-lm keeps [B, H, Dv, Dk].
    let mut s = state.as_dtype(Dtype::Float32)?.swap_axes(-1, -2)?;
    let mut ys = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = |x: &Array| x.index((.., .., i));
        let v_new = at(&u).subtract(at(&w).matmul(&s)?)?;
        ys.push(at(&q_decayed).matmul(&s)?.add(at(&qk).matmul(&v_new)?)?);
        let gl = at(&g_last).expand_dims(-1)?; // [B, H, 1, 1]
        s = s.multiply(&gl)?.add(at(&k_tail).swap_axes(-1, -2)?.matmul(&v_new)?)?;
    }
    // [B, H, N, C, Dv] -> [B, T, H, Dv]
    let y = ops::stack(&ys, 2)?.reshape(&[b, hv, tp, dv])?;
    let y = y.index((.., .., ..t, ..)).transpose_axes(&[0, 2, 1, 3])?.as_dtype(out_dtype)?;
    Ok((y, s.swap_axes(-1, -2)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::random;

    fn inputs(t: i32, hk: i32, hv: i32, dk: i32, dv: i32) -> (Array, Array, Array, Array, Array, Array) {
        let kk = |i: u64| random::key(100 + i).unwrap();
        let q = random::normal::<f32>(&[1, t, hk, dk], None, None, &kk(0)).unwrap();
        let k = random::normal::<f32>(&[1, t, hk, dk], None, None, &kk(1)).unwrap();
        let (q, k) = normalize_qk(&q, &k, dk).unwrap();
        let v = random::normal::<f32>(&[1, t, hv, dv], None, None, &kk(2)).unwrap();
        let a = random::normal::<f32>(&[1, t, hv], None, None, &kk(3)).unwrap();
        let a_log = random::uniform::<_, f32>(0.0f32, 2.0f32, &[hv], &kk(4)).unwrap();
        let g = log_decay(&a_log, &a, &ops::ones::<f32>(&[hv]).unwrap()).unwrap();
        let beta = ops::sigmoid(random::normal::<f32>(&[1, t, hv], None, None, &kk(5)).unwrap()).unwrap();
        let s0 = random::normal::<f32>(&[1, hv, dv, dk], None, None, &kk(0)).unwrap().multiply(mlx_rs::array!(0.1f32)).unwrap();
        (q, k, v, g, beta, s0)
    }

    fn max_diff(a: &Array, b: &Array) -> f32 {
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
    }

    #[test]
    fn unit_lower_inverse_inverts() {
        let key = random::key(3).unwrap();
        let m = random::normal::<f32>(&[2, 16, 16], None, None, &key).unwrap();
        let l = ops::tril(&m, -1).unwrap().multiply(mlx_rs::array!(0.3f32)).unwrap().add(ops::eye::<f32>(16, None, None).unwrap()).unwrap();
        let inv = unit_lower_inverse(&l).unwrap();
        let id = l.matmul(&inv).unwrap();
        let d = max_diff(&id, &ops::broadcast_to(ops::eye::<f32>(16, None, None).unwrap(), &[2, 16, 16]).unwrap());
        assert!(d < 1e-4, "L * inv(L) is off the identity by {d}");
    }

    /// The chunked form (several chunks, a ragged last one, grouped heads,
    /// a non-zero starting state) equals the token-by-token recurrence.
    #[test]
    fn chunked_equals_recurrent() {
        for (t, hk, hv) in [(150, 2, 4), (64, 1, 1), (17, 2, 2)] {
            let (q, k, v, g, beta, s0) = inputs(t, hk, hv, 16, 8);
            let (y1, s1) = recurrent(&q, &k, &v, &g, &beta, &s0).unwrap();
            let (y2, s2) = chunked(&q, &k, &v, &g, &beta, &s0).unwrap();
            assert_eq!(y1.shape(), y2.shape());
            let (dy, ds) = (max_diff(&y1, &y2), max_diff(&s1, &s2));
            let scale = y1.abs().unwrap().max(None).unwrap().item_exact::<f32>();
            assert!(dy < 1e-4 * scale.max(1.0) && ds < 1e-4, "T={t}: y differs by {dy} (of {scale}), state by {ds}");
        }
    }

    /// On CUDA the kernel agrees with the ops path (f32 and bf16 inputs, grouped
    /// heads, 40 tokens, a non-zero state); elsewhere it stays out of the way.
    #[test]
    fn cuda_kernel_matches_the_ops_path_or_stays_off() {
        let (q, k, v, g, beta, s0) = inputs(40, 2, 4, 128, 64);
        let got = crate::models::kernels::cuda::delta::run(&q, &k, &v, &g, &beta, &s0).unwrap();
        if !crate::models::kernels::cuda::delta::enabled() {
            assert!(got.is_none(), "the CUDA kernel ran without CUDA");
            return;
        }
        let (y, s) = got.expect("Dk = 128 takes the kernel on CUDA");
        let (y0, s0r) = recurrent(&q, &k, &v, &g, &beta, &s0).unwrap();
        let (dy, ds) = (max_diff(&y, &y0), max_diff(&s, &s0r));
        eprintln!("CUDA gated delta vs ops (f32): y {dy:e}, state {ds:e}");
        assert!(dy < 1e-3 && ds < 1e-3, "f32: y differs by {dy}, state by {ds}");
        let bf = |a: &Array| a.as_dtype(Dtype::Bfloat16).unwrap();
        let (yb, _) = crate::models::kernels::cuda::delta::run(&bf(&q), &bf(&k), &bf(&v), &g, &beta, &s0).unwrap().unwrap();
        let scale = y0.abs().unwrap().max(None).unwrap().item_exact::<f32>();
        let d = max_diff(&yb.as_dtype(Dtype::Float32).unwrap(), &y0);
        eprintln!("CUDA gated delta vs ops (bf16 inputs): y {d:e} of {scale}");
        assert!(d < 0.05 * scale.max(1.0), "bf16: y differs by {d}");
    }

    /// Splitting a sequence (prefill then steps) gives the same as one pass.
    #[test]
    fn state_carries_across_calls() {
        let (q, k, v, g, beta, s0) = inputs(40, 2, 2, 16, 8);
        let (y, s) = update(&q, &k, &v, &g, &beta, Some(&s0)).unwrap();
        let cut = |x: &Array, r: std::ops::Range<i32>| x.index((.., r));
        let (ya, sa) = update(&cut(&q, 0..30), &cut(&k, 0..30), &cut(&v, 0..30), &cut(&g, 0..30), &cut(&beta, 0..30), Some(&s0)).unwrap();
        let (yb, sb) = update(&cut(&q, 30..40), &cut(&k, 30..40), &cut(&v, 30..40), &cut(&g, 30..40), &cut(&beta, 30..40), Some(&sa)).unwrap();
        let joined = ops::concatenate(&[ya, yb], 1).unwrap();
        assert!(max_diff(&y, &joined) < 1e-4 && max_diff(&s, &sb) < 1e-4);
    }
}
