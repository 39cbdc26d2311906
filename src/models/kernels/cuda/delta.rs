//! The gated delta recurrence as one CUDA kernel over all tokens of a call
//! (prefill and decode alike). On CUDA, mlx-lm runs the recurrence as MLX ops
//! token by token (its kernels are Metal only), a dozen launches per token
//! and layer; here one launch per layer covers the whole prompt.
//!
//! Layout (as mlx-lm's Metal kernel): one warp per (batch, value head, value
//! row); lane i keeps `Dk / 32` entries of that state row in registers, so the
//! two dot products per token (S k and S q) are warp reductions. The state
//! stays in float32; q, k, v and y are in the model's type. Used when the key
//! head size is a multiple of 32; `HEARTH_DELTA_KERNEL=0` turns it off (A/B).

use crate::models::kernels::cuda::{Kernel, Launch};
use crate::error::{Error, Result};
use mlx_rs::{ops, Array, Dtype};

const HEADER: &str = r#"
__device__ inline float warp_all_sum(float v) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}
"#;

/// q, k [B, T, Hk, Dk]; v [B, T, Hv, Dv]; g (decay, not its log), beta
/// [B, T, Hv] float32; state_in [B, Hv, Dv, Dk] float32.
/// Grid: (32, Dv, B * Hv) threads, blocks of (32, 4, 1): one warp per row.
const SOURCE: &str = r#"
  constexpr int NPT = Dk / 32;
  const int T = q_shape[1];
  const int n = blockIdx.z;
  const int b_idx = n / Hv;
  const int hv_idx = n % Hv;
  const int hk_idx = hv_idx / (Hv / Hk);
  const int lane = threadIdx.x;
  const int dv_idx = blockIdx.y * blockDim.y + threadIdx.y;
  if (dv_idx >= Dv) return;
  const InT* q_ = q + (size_t)b_idx * T * Hk * Dk + hk_idx * Dk + NPT * lane;
  const InT* k_ = k + (size_t)b_idx * T * Hk * Dk + hk_idx * Dk + NPT * lane;
  const InT* v_ = v + (size_t)b_idx * T * Hv * Dv + hv_idx * Dv + dv_idx;
  InT* y_ = y + (size_t)b_idx * T * Hv * Dv + hv_idx * Dv + dv_idx;
  const float* g_ = g + (size_t)b_idx * T * Hv + hv_idx;
  const float* beta_ = beta + (size_t)b_idx * T * Hv + hv_idx;
  const size_t row = ((size_t)n * Dv + dv_idx) * Dk + NPT * lane;
  float st[NPT];
  #pragma unroll
  for (int i = 0; i < NPT; ++i) st[i] = state_in[row + i];
  for (int t = 0; t < T; ++t) {
    const float gt = g_[(size_t)t * Hv];
    float kv = 0.f;
    float kk[NPT];
    #pragma unroll
    for (int i = 0; i < NPT; ++i) {
      kk[i] = static_cast<float>(k_[(size_t)t * Hk * Dk + i]);
      st[i] *= gt;
      kv += st[i] * kk[i];
    }
    kv = warp_all_sum(kv);
    const float delta = (static_cast<float>(v_[(size_t)t * Hv * Dv]) - kv) * beta_[(size_t)t * Hv];
    float out = 0.f;
    #pragma unroll
    for (int i = 0; i < NPT; ++i) {
      st[i] += kk[i] * delta;
      out += st[i] * static_cast<float>(q_[(size_t)t * Hk * Dk + i]);
    }
    out = warp_all_sum(out);
    if (lane == 0) y_[(size_t)t * Hv * Dv] = static_cast<InT>(out);
  }
  #pragma unroll
  for (int i = 0; i < NPT; ++i) state_out[row + i] = st[i];
"#;

/// The whole Gated DeltaNet core of a layer in one kernel: the causal
/// depthwise conv over the projections (its window from `conv_in`), SiLU,
/// q/k L2 normalisation (q also scaled by Dk^-1/2), the decay from `a`,
/// `A_log`, `dt_bias` and beta from `b`, then the recurrence. Each warp redoes
/// its head's conv and norms (cheap next to a dozen launches); the conv
/// window it leaves is written once per channel (v channels by their row's
/// warp, q/k channels by the first row of the key head's first value head).
/// mixed [B, T, C] (q | k | v channels), conv_in [B, K-1, C], conv_w [C, K],
/// a, b [B, T, Hv]; a_log, dt_bias [Hv] float32; state_in [B, Hv, Dv, Dk] float32.
const FUSED_SOURCE: &str = r#"
  constexpr int NPT = Dk / 32;
  constexpr int C = 2 * Hk * Dk + Hv * Dv;
  const int T = mixed_shape[1];
  const int n = blockIdx.z;
  const int b_idx = n / Hv;
  const int hv_idx = n % Hv;
  const int hk_idx = hv_idx / (Hv / Hk);
  const int lane = threadIdx.x;
  const int dv_idx = blockIdx.y * blockDim.y + threadIdx.y;
  if (dv_idx >= Dv) return;
  const InT* x_ = mixed + (size_t)b_idx * T * C;
  const InT* cs_ = conv_in + (size_t)b_idx * (K - 1) * C;
  // Window position p of channel c: the carried state first, then the tokens.
  auto at = [&](int p, int c) -> float {
    return p < K - 1 ? static_cast<float>(cs_[(size_t)p * C + c]) : static_cast<float>(x_[(size_t)(p - (K - 1)) * C + c]);
  };
  auto conv_silu = [&](int t, int c) -> float {
    float acc = 0.f;
    #pragma unroll
    for (int j = 0; j < K; ++j) acc += static_cast<float>(conv_w[c * K + j]) * at(t + j, c);
    return acc / (1.f + __expf(-acc));
  };
  const int cq = hk_idx * Dk + NPT * lane;
  const int ck = Hk * Dk + hk_idx * Dk + NPT * lane;
  const int cv = 2 * Hk * Dk + hv_idx * Dv + dv_idx;
  const float a_exp = __expf(a_log[hv_idx]);
  const float bias = dt_bias[hv_idx];
  const float inv_dk = 1.f / Dk;
  const float q_scale = inv_dk;          // (Dk^-1/2)^2 folded into q
  const float k_scale = rsqrtf((float)Dk);
  const float eps = 1e-6f * inv_dk;
  const size_t row = ((size_t)n * Dv + dv_idx) * Dk + NPT * lane;
  InT* y_ = y + (size_t)b_idx * T * Hv * Dv + hv_idx * Dv + dv_idx;
  float st[NPT];
  #pragma unroll
  for (int i = 0; i < NPT; ++i) st[i] = state_in[row + i];
  for (int t = 0; t < T; ++t) {
    float q[NPT], k[NPT];
    float sq = 0.f, sk = 0.f;
    #pragma unroll
    for (int i = 0; i < NPT; ++i) {
      q[i] = conv_silu(t, cq + i);
      k[i] = conv_silu(t, ck + i);
      sq += q[i] * q[i];
      sk += k[i] * k[i];
    }
    sq = warp_all_sum(sq);
    sk = warp_all_sum(sk);
    const float rq = rsqrtf(sq * inv_dk + eps) * q_scale;
    const float rk = rsqrtf(sk * inv_dk + eps) * k_scale;
    const float v = conv_silu(t, cv);
    const size_t tb = ((size_t)b_idx * T + t) * Hv + hv_idx;
    const float xa = static_cast<float>(a[tb]) + bias;
    const float softplus = xa > 20.f ? xa : log1pf(__expf(xa));
    const float gt = __expf(-a_exp * softplus);
    const float beta = 1.f / (1.f + __expf(-static_cast<float>(b[tb])));
    float kv = 0.f;
    #pragma unroll
    for (int i = 0; i < NPT; ++i) {
      k[i] *= rk;
      st[i] *= gt;
      kv += st[i] * k[i];
    }
    kv = warp_all_sum(kv);
    const float delta = (v - kv) * beta;
    float out = 0.f;
    #pragma unroll
    for (int i = 0; i < NPT; ++i) {
      st[i] += k[i] * delta;
      out += st[i] * q[i] * rq;
    }
    out = warp_all_sum(out);
    if (lane == 0) y_[(size_t)t * Hv * Dv] = static_cast<InT>(out);
  }
  #pragma unroll
  for (int i = 0; i < NPT; ++i) state_out[row + i] = st[i];
  // The conv window after these tokens: the last K-1 positions.
  InT* co_ = conv_out + (size_t)b_idx * (K - 1) * C;
  for (int p = 0; p < K - 1; ++p) {
    const int src = T + p;
    if (lane == 0) co_[(size_t)p * C + cv] = static_cast<InT>(at(src, cv));
    if (dv_idx == 0 && hv_idx % (Hv / Hk) == 0) {
      #pragma unroll
      for (int i = 0; i < NPT; ++i) {
        co_[(size_t)p * C + cq + i] = static_cast<InT>(at(src, cq + i));
        co_[(size_t)p * C + ck + i] = static_cast<InT>(at(src, ck + i));
      }
    }
  }
"#;

thread_local! {
    static KERNEL: Option<Kernel> =
        Kernel::new("hearth_gated_delta", &["q", "k", "v", "g", "beta", "state_in"], &["y", "state_out"], SOURCE, HEADER).ok();
    static FUSED: Option<Kernel> = Kernel::new(
        "hearth_gated_delta_fused",
        &["mixed", "conv_in", "conv_w", "a", "b", "a_log", "dt_bias", "state_in"],
        &["y", "state_out", "conv_out"],
        FUSED_SOURCE,
        HEADER,
    )
    .ok();
}

/// The parts of one Gated DeltaNet call the fused kernel takes.
pub struct FusedInputs<'a> {
    /// q | k | v projections before the conv, [B, T, C].
    pub mixed: &'a Array,
    /// The carried conv window [B, K-1, C].
    pub conv_in: &'a Array,
    /// The depthwise conv weight [C, K, 1].
    pub conv_w: &'a Array,
    pub a: &'a Array,
    pub b: &'a Array,
    pub a_log: &'a Array,
    pub dt_bias: &'a Array,
    /// [B, Hv, Dv, Dk] float32.
    pub state: &'a Array,
    pub heads: (i32, i32),
    pub dims: (i32, i32),
}

/// Calls of at most this many tokens take the fused kernel (decode, short
/// follow-ups). Longer prefills run the conv and norms as MLX ops and only
/// the recurrence as a kernel (`run`): a warp redoing its head's conv for
/// every token lengthens the sequential loop, and on an H100 a 2048-token
/// Qwen3.5-35B-A3B prefill took 1.36 s fused against 0.98 s split.
pub const FUSED_UP_TO: i32 = 16;

/// Conv, activation, norms, gates and recurrence in one launch: (y [B, T, Hv, Dv],
/// new state, new conv window), or None where it does not apply.
pub fn run_fused(f: &FusedInputs) -> Result<Option<(Array, Array, Array)>> {
    let ((hk, hv), (dk, dv)) = (f.heads, f.dims);
    let (b, t, c) = (f.mixed.shape()[0], f.mixed.shape()[1], f.mixed.shape()[2]);
    let k = f.conv_w.shape()[1];
    if !enabled() || t > FUSED_UP_TO || dk % 32 != 0 || dk > 1024 || hv % hk != 0 || c != 2 * hk * dk + hv * dv || k < 2 {
        return Ok(None);
    }
    let dtype = f.mixed.dtype();
    let conv_w = f.conv_w.reshape(&[c, k])?.as_dtype(dtype)?;
    let conv_in = f.conv_in.as_dtype(dtype)?;
    let (a, bb) = (f.a.as_dtype(dtype)?, f.b.as_dtype(dtype)?);
    let a_log = f.a_log.as_dtype(Dtype::Float32)?;
    let dt_bias = f.dt_bias.as_dtype(Dtype::Float32)?;
    let state = f.state.as_dtype(Dtype::Float32)?;
    let y_shape = [b, t, hv, dv];
    let s_shape = [b, hv, dv, dk];
    let c_shape = [b, k - 1, c];
    FUSED.with(|kernel| {
        let kernel = kernel.as_ref().ok_or_else(|| Error::Mlx("the fused gated delta kernel could not be built".into()))?;
        let mut out = kernel.apply(&Launch {
            inputs: &[f.mixed, &conv_in, &conv_w, &a, &bb, &a_log, &dt_bias, &state],
            ints: &[("Dk", dk), ("Dv", dv), ("Hk", hk), ("Hv", hv), ("K", k)],
            bools: &[],
            types: &[("InT", dtype)],
            outputs: &[(&y_shape, dtype), (&s_shape, Dtype::Float32), (&c_shape, dtype)],
            grid: (32, dv, b * hv),
            block: (32, 4, 1),
        })?;
        let conv = out.pop().ok_or_else(|| Error::Mlx("the fused gated delta kernel gave no conv window".into()))?;
        let s = out.pop().ok_or_else(|| Error::Mlx("the fused gated delta kernel gave no state".into()))?;
        let y = out.pop().ok_or_else(|| Error::Mlx("the fused gated delta kernel gave no output".into()))?;
        Ok(Some((y, s, conv)))
    })
}

/// Whether the kernel may run here: a CUDA device, not turned off.
pub fn enabled() -> bool {
    crate::models::kernels::switches().delta
}

/// The recurrence on CUDA, or None where the kernel does not apply (no CUDA,
/// turned off, a key head size that is not a multiple of 32).
pub fn run(q: &Array, k: &Array, v: &Array, g_log: &Array, beta: &Array, state: &Array) -> Result<Option<(Array, Array)>> {
    if !enabled() {
        return Ok(None);
    }
    launch_recurrence(q, k, v, g_log, beta, state, |l| {
        KERNEL.with(|kernel| kernel.as_ref().ok_or_else(|| Error::Mlx("the gated delta kernel could not be built".into()))?.apply(l))
    })
}

/// The recurrence kernel's launch, the same on CUDA and Metal (`kernels::metal::delta`):
/// inputs cast as the kernel reads them, its template values, outputs and
/// grid, handed to `apply`; None where the shapes do not fit (key heads a
/// multiple of 32 wide and at most 1024, value heads grouped evenly).
pub(crate) fn launch_recurrence(
    q: &Array,
    k: &Array,
    v: &Array,
    g_log: &Array,
    beta: &Array,
    state: &Array,
    apply: impl FnOnce(&Launch) -> Result<Vec<Array>>,
) -> Result<Option<(Array, Array)>> {
    let (b, t, hk, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hv, dv) = (v.shape()[2], v.shape()[3]);
    if dk % 32 != 0 || dk > 1024 || hv % hk != 0 {
        return Ok(None);
    }
    let dtype = q.dtype();
    let g = ops::exp(g_log.as_dtype(Dtype::Float32)?)?;
    let beta = beta.as_dtype(Dtype::Float32)?;
    let (k, v) = (k.as_dtype(dtype)?, v.as_dtype(dtype)?);
    let state = state.as_dtype(Dtype::Float32)?;
    let y_shape = [b, t, hv, dv];
    let s_shape = [b, hv, dv, dk];
    let mut out = apply(&Launch {
        inputs: &[q, &k, &v, &g, &beta, &state],
        ints: &[("Dk", dk), ("Dv", dv), ("Hk", hk), ("Hv", hv)],
        bools: &[],
        types: &[("InT", dtype)],
        outputs: &[(&y_shape, dtype), (&s_shape, Dtype::Float32)],
        grid: (32, dv, b * hv),
        block: (32, 4, 1),
    })?;
    let s = out.pop().ok_or_else(|| Error::Mlx("the gated delta kernel gave no state".into()))?;
    let y = out.pop().ok_or_else(|| Error::Mlx("the gated delta kernel gave no output".into()))?;
    Ok(Some((y, s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nn::gated_delta::{log_decay, normalize_qk, recurrent};
    use mlx_rs::ops::indexing::IndexOp;
    use mlx_rs::random;

    /// On CUDA the fused kernel agrees with the ops chain it replaces (conv,
    /// SiLU, norms, gates, recurrence, the conv window left behind); elsewhere
    /// it stays out of the way.
    #[test]
    fn fused_kernel_matches_the_ops_chain_or_stays_off() {
        let (bsz, t, hk, hv, dk, dv, k) = (1, 7, 2, 4, 64, 32, 4);
        let c = 2 * hk * dk + hv * dv;
        let r = |seed: u64, shape: &[i32], s: f32| {
            random::normal::<f32>(shape, None, None, &random::key(seed).unwrap()).unwrap().multiply(mlx_rs::array!(s)).unwrap()
        };
        let (mixed, conv_in, conv_w) = (r(1, &[bsz, t, c], 1.0), r(2, &[bsz, k - 1, c], 1.0), r(3, &[c, k, 1], 0.5));
        let (a, b) = (r(4, &[bsz, t, hv], 1.0), r(5, &[bsz, t, hv], 1.0));
        let (a_log, dt_bias) = (r(6, &[hv], 0.5), r(7, &[hv], 0.5));
        let state = r(8, &[bsz, hv, dv, dk], 0.1);
        let got = run_fused(&FusedInputs {
            mixed: &mixed,
            conv_in: &conv_in,
            conv_w: &conv_w,
            a: &a,
            b: &b,
            a_log: &a_log,
            dt_bias: &dt_bias,
            state: &state,
            heads: (hk, hv),
            dims: (dk, dv),
        })
        .unwrap();
        if !enabled() {
            assert!(got.is_none(), "the fused kernel ran without CUDA");
            return;
        }
        let (y, s, window) = got.expect("Dk = 64 takes the kernel on CUDA");
        let full = ops::concatenate(&[conv_in.clone(), mixed.clone()], 1).unwrap();
        let conv = ops::conv1d(&full, &conv_w, 1, 0, 1, c).unwrap();
        let conv = conv.multiply(ops::sigmoid(&conv).unwrap()).unwrap();
        let kd = hk * dk;
        let q = conv.index((.., .., ..kd)).reshape(&[bsz, t, hk, dk]).unwrap();
        let kk = conv.index((.., .., kd..2 * kd)).reshape(&[bsz, t, hk, dk]).unwrap();
        let v = conv.index((.., .., 2 * kd..)).reshape(&[bsz, t, hv, dv]).unwrap();
        let (q, kk) = normalize_qk(&q, &kk, dk).unwrap();
        let g = log_decay(&a_log, &a, &dt_bias).unwrap();
        let (y0, s0) = recurrent(&q, &kk, &v, &g, &ops::sigmoid(&b).unwrap(), &state).unwrap();
        let diff = |x: &Array, y: &Array| x.subtract(y).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        let w0 = full.index((.., t.., ..));
        let (dy, ds, dw) = (diff(&y, &y0), diff(&s, &s0), diff(&window, &w0));
        eprintln!("fused gated delta vs ops: y {dy:e}, state {ds:e}, conv window {dw:e}");
        assert!(dy < 1e-3 && ds < 1e-3 && dw == 0.0, "y {dy}, state {ds}, window {dw}");
    }
}
