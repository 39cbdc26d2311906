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

use super::cuda_kernel::{cuda_available, Kernel, Launch};
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

thread_local! {
    static KERNEL: Option<Kernel> =
        Kernel::new("hearth_gated_delta", &["q", "k", "v", "g", "beta", "state_in"], &["y", "state_out"], SOURCE, HEADER).ok();
}

/// Whether the kernel may run here: a CUDA device, not turned off.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| cuda_available() && std::env::var("HEARTH_DELTA_KERNEL").map_or(true, |v| v != "0"))
}

/// The recurrence on CUDA, or None where the kernel does not apply (no CUDA,
/// turned off, a key head size that is not a multiple of 32).
pub fn run(q: &Array, k: &Array, v: &Array, g_log: &Array, beta: &Array, state: &Array) -> Result<Option<(Array, Array)>> {
    let (b, _t, hk, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hv, dv) = (v.shape()[2], v.shape()[3]);
    if !enabled() || dk % 32 != 0 || dk > 1024 || hv % hk != 0 {
        return Ok(None);
    }
    let dtype = q.dtype();
    let g = ops::exp(g_log.as_dtype(Dtype::Float32)?)?;
    let beta = beta.as_dtype(Dtype::Float32)?;
    let (k, v) = (k.as_dtype(dtype)?, v.as_dtype(dtype)?);
    let state = state.as_dtype(Dtype::Float32)?;
    let y_shape = [b, q.shape()[1], hv, dv];
    let s_shape = [b, hv, dv, dk];
    KERNEL.with(|kernel| {
        let kernel = kernel.as_ref().ok_or_else(|| Error::Mlx("the gated delta kernel could not be built".into()))?;
        let mut out = kernel.apply(&Launch {
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
    })
}
