//! Mixture-of-experts blocks as custom CUDA kernels, through MLX's
//! custom-kernel API (mlx-c's `mlx_fast_cuda_kernel_*`; mlx-rs wraps none of
//! it). For one token, MLX's `gather_qmm` runs the three expert matmuls as
//! separate launches well under the memory bandwidth; for a prompt's rows
//! sorted by expert it stays far from the tensor cores. Here, for decode:
//!
//! 1. `gate_up`: one warp per (chosen expert, row) computes the gate
//!    and up rows of 4-bit affine weights against the token, adds the expert
//!    biases, and applies the activation (SiLU or gpt-oss's clamped SwiGLU);
//! 2. `down`: one warp per output row runs the down rows of all chosen
//!    experts (their chunks spread over the lanes), adds biases, and sums them
//!    weighted by the router scores;
//! 3. `route`: the router's softmax and top-k in one warp.
//!
//! Prefill's kernel (rows sorted by expert, on tensor cores) is in
//! `moe_grouped_cuda`.
//!
//! The decode kernels stage inputs in shared memory transposed (value v of
//! 32-chunk j at `v * CHUNKS + j`) so the lanes of a warp read consecutive
//! words. All run only on CUDA with 4-bit affine experts (group a multiple of
//! 32); everything else keeps the `gather_qmm` path, which Metal and CPUs run.
//! `HEARTH_MOE_KERNEL=0` turns them off (for A/B runs).

use super::cuda_kernel::{Kernel, Launch};
use crate::error::{Error, Result};
use mlx_rs::Array;

const HEADER: &str = r#"
template <int CHUNKS>
__device__ inline float dot_q4(uint4 p, const float* xt, int j) {
  float acc = 0.f;
  unsigned int words[4] = {p.x, p.y, p.z, p.w};
  #pragma unroll
  for (int w = 0; w < 4; ++w) {
    #pragma unroll
    for (int n = 0; n < 8; ++n) {
      acc += static_cast<float>((words[w] >> (4 * n)) & 0xF) * xt[(w * 8 + n) * CHUNKS + j];
    }
  }
  return acc;
}
__device__ inline float warp_sum(float v) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  return v;
}
"#;

const GATE_UP: &str = r#"
  constexpr int CH = IN / 32;
  __shared__ float xt[IN];
  __shared__ float xsum[CH];
  for (int i = threadIdx.x; i < IN; i += blockDim.x) {
    xt[(i % 32) * CH + i / 32] = static_cast<float>(x[i]);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < CH; j += blockDim.x) {
    float t = 0.f;
    for (int v = 0; v < 32; ++v) t += xt[v * CH + j];
    xsum[j] = t;
  }
  __syncthreads();
  int lane = threadIdx.x & 31;
  int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int kk = blockIdx.y;
  if (row >= OUT) return;
  size_t r = (size_t)idx[kk] * OUT + row;
  const uint4* wg = reinterpret_cast<const uint4*>(w_gate) + r * CH;
  const uint4* wu = reinterpret_cast<const uint4*>(w_up) + r * CH;
  const T* sg = s_gate + r * (IN / GS);
  const T* bg = b_gate + r * (IN / GS);
  const T* su = s_up + r * (IN / GS);
  const T* bu = b_up + r * (IN / GS);
  float ag = 0.f, au = 0.f;
  #pragma unroll 4
  for (int j = lane; j < CH; j += 32) {
    uint4 pg = wg[j];
    uint4 pu = wu[j];
    int grp = (j * 32) / GS;
    ag += static_cast<float>(sg[grp]) * dot_q4<CH>(pg, xt, j) + static_cast<float>(bg[grp]) * xsum[j];
    au += static_cast<float>(su[grp]) * dot_q4<CH>(pu, xt, j) + static_cast<float>(bu[grp]) * xsum[j];
  }
  ag = warp_sum(ag);
  au = warp_sum(au);
  if (lane == 0) {
    if (BIAS) {
      ag += static_cast<float>(bias_gate[r]);
      au += static_cast<float>(bias_up[r]);
    }
    // Rounded to the model's type where MLX's path holds it in that type.
    float g = static_cast<float>(static_cast<T>(ag));
    float u = static_cast<float>(static_cast<T>(au));
    float a;
    if (ACT == 1) {
      g = fminf(g, 7.0f);
      u = fminf(fmaxf(u, -7.0f), 7.0f);
      a = (u + 1.0f) * (g / (1.0f + __expf(-1.702f * g)));
    } else {
      a = static_cast<float>(static_cast<T>(g / (1.0f + __expf(-g)))) * u;
    }
    act[kk * OUT + row] = static_cast<T>(a);
  }
"#;

const DOWN: &str = r#"
  constexpr int CH = IN / 32;
  __shared__ float at[K * IN];
  __shared__ float asum[K * CH];
  for (int i = threadIdx.x; i < K * IN; i += blockDim.x) {
    int kk = i / IN, c = i % IN;
    at[kk * IN + (c % 32) * CH + c / 32] = static_cast<float>(act[i]);
  }
  __syncthreads();
  for (int t = threadIdx.x; t < K * CH; t += blockDim.x) {
    int kk = t / CH, j = t % CH;
    float s = 0.f;
    for (int v = 0; v < 32; ++v) s += at[kk * IN + v * CH + j];
    asum[t] = s;
  }
  __syncthreads();
  int lane = threadIdx.x & 31;
  int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (row >= OUT) return;
  float total = 0.f;
  #pragma unroll 4
  for (int t = lane; t < K * CH; t += 32) {
    int kk = t / CH, j = t % CH;
    size_t r = (size_t)idx[kk] * OUT + row;
    uint4 p = reinterpret_cast<const uint4*>(w_down)[r * CH + j];
    int grp = (j * 32) / GS;
    size_t s = r * (IN / GS) + grp;
    float d = static_cast<float>(s_down[s]) * dot_q4<CH>(p, at + kk * IN, j) + static_cast<float>(b_down[s]) * asum[t];
    total += d * static_cast<float>(scores[kk]);
  }
  total = warp_sum(total);
  if (lane == 0) {
    if (BIAS) {
      for (int kk = 0; kk < K; ++kk) {
        total += static_cast<float>(bias_down[(size_t)idx[kk] * OUT + row]) * static_cast<float>(scores[kk]);
      }
    }
    y[row] = static_cast<T>(total);
  }
"#;

// The router's choice for one token, in one warp: MODE 0 (Qwen3-MoE) takes a
// softmax over all E logits (in float, rounded to T as MLX's precise softmax
// returns it), the K largest probabilities, renormalised when NORM; MODE 1
// (gpt-oss) takes the K largest logits and a softmax over those K. Ties go to
// the lower expert. Replaces softmax, argpartition, take_along_axis, sum and
// divide: six launches per layer and token.
const ROUTE: &str = r#"
  constexpr int PER = (E + 31) / 32;
  int lane = threadIdx.x & 31;
  float v[PER];
  float m = -INFINITY;
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    int e = lane + 32 * i;
    v[i] = e < E ? static_cast<float>(logits[e]) : -INFINITY;
    m = fmaxf(m, v[i]);
  }
  if (MODE == 0) {
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    float sum = 0.f;
    #pragma unroll
    for (int i = 0; i < PER; ++i) {
      v[i] = (lane + 32 * i) < E ? expf(v[i] - m) : 0.f;
      sum += v[i];
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
    #pragma unroll
    for (int i = 0; i < PER; ++i) {
      v[i] = (lane + 32 * i) < E ? static_cast<float>(static_cast<T>(v[i] / sum)) : -INFINITY;
    }
  }
  float vals[K];
  int ids[K];
  #pragma unroll
  for (int kk = 0; kk < K; ++kk) {
    float best = -INFINITY;
    int bi = 0x7fffffff;
    #pragma unroll
    for (int i = 0; i < PER; ++i) {
      int e = lane + 32 * i;
      if (e < E && (v[i] > best || (v[i] == best && e < bi))) { best = v[i]; bi = e; }
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ob = __shfl_xor_sync(0xffffffff, best, o);
      int oi = __shfl_xor_sync(0xffffffff, bi, o);
      if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
    }
    vals[kk] = best;
    ids[kk] = bi;
    #pragma unroll
    for (int i = 0; i < PER; ++i) {
      if (lane + 32 * i == bi) v[i] = -INFINITY;
    }
  }
  if (lane == 0) {
    if (MODE == 0) {
      float total = 0.f;
      for (int kk = 0; kk < K; ++kk) total += vals[kk];
      float t = static_cast<float>(static_cast<T>(total));
      for (int kk = 0; kk < K; ++kk) {
        inds[kk] = static_cast<uint32_t>(ids[kk]);
        scores[kk] = NORM ? static_cast<T>(vals[kk] / t) : static_cast<T>(vals[kk]);
      }
    } else {
      float mx = vals[0];
      for (int kk = 1; kk < K; ++kk) mx = fmaxf(mx, vals[kk]);
      float total = 0.f;
      for (int kk = 0; kk < K; ++kk) total += expf(vals[kk] - mx);
      for (int kk = 0; kk < K; ++kk) {
        inds[kk] = static_cast<uint32_t>(ids[kk]);
        scores[kk] = static_cast<T>(expf(vals[kk] - mx) / total);
      }
    }
  }
"#;

/// Largest static shared memory a block may use (48 KiB) in floats.
const SHARED_FLOATS: i32 = 48 * 1024 / 4;

thread_local! {
    static KERNELS: Option<(Kernel, Kernel)> = build().ok();
    static ROUTER: Option<Kernel> = Kernel::new("hearth_moe_route", &["logits"], &["inds", "scores"], ROUTE, "").ok();
}

/// How the router turns logits into experts and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Softmax over all experts, top-k, optionally renormalised (Qwen3-MoE).
    SoftmaxTopK { norm: bool },
    /// Top-k logits, softmax over those (gpt-oss).
    TopKSoftmax,
}

/// Whether `route` handles this many experts and choices.
pub fn routes(experts: i32, k: i32) -> bool {
    (1..=1024).contains(&experts) && (1..=32.min(experts)).contains(&k)
}

/// The router's choice for one token: `logits` [E] (the model's float type)
/// -> the `k` chosen experts [k] uint32 and their weights [k].
pub fn route(logits: &Array, k: i32, routing: Routing) -> Result<(Array, Array)> {
    let dtype = logits.dtype();
    let experts = logits.size() as i32;
    let (mode, norm) = match routing {
        Routing::SoftmaxTopK { norm } => (0, norm),
        Routing::TopKSoftmax => (1, false),
    };
    ROUTER.with(|r| {
        let r = r.as_ref().ok_or_else(|| Error::Mlx("the MoE router kernel could not be built".into()))?;
        let mut out = r
            .apply(&Launch {
                inputs: &[logits],
                ints: &[("E", experts), ("K", k), ("MODE", mode)],
                bools: &[("NORM", norm)],
                types: &[("T", dtype)],
                outputs: &[(&[k], mlx_rs::Dtype::Uint32), (&[k], dtype)],
                grid: (32, 1, 1),
                block: (32, 1, 1),
            })?
            .into_iter();
        match (out.next(), out.next()) {
            (Some(i), Some(s)) => Ok((i, s)),
            _ => Err(Error::Mlx("the MoE router kernel gave no output".into())),
        }
    })
}

fn build() -> Result<(Kernel, Kernel)> {
    let gate_up = Kernel::new(
        "hearth_moe_gate_up_q4",
        &["x", "idx", "w_gate", "s_gate", "b_gate", "w_up", "s_up", "b_up", "bias_gate", "bias_up"],
        &["act"],
        GATE_UP,
        HEADER,
    )?;
    let down =
        Kernel::new("hearth_moe_down_q4", &["act", "idx", "scores", "w_down", "s_down", "b_down", "bias_down"], &["y"], DOWN, HEADER)?;
    Ok((gate_up, down))
}

/// Whether the fused decode kernels may run here: a CUDA device, not turned off.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::cuda_kernel::cuda_available() && std::env::var("HEARTH_MOE_KERNEL").map_or(true, |v| v != "0"))
}

/// One expert projection's 4-bit affine parts: packed [E, out, in/8], scales and
/// biases [E, out, in/group], expert bias [E, out] if any.
pub struct Q4<'a> {
    pub weight: &'a Array,
    pub scales: &'a Array,
    pub biases: &'a Array,
    pub bias: Option<&'a Array>,
}

/// Whether `gate_up`/`down` handle these sizes (shared memory holds the token,
/// or all chosen experts' activations, as floats).
pub fn fits(hidden: i32, inter: i32, k: i32, group: i32) -> bool {
    let staged = |n: i32| n + n / 32;
    hidden % 32 == 0 && inter % 32 == 0 && group % 32 == 0 && staged(hidden) <= SHARED_FLOATS && staged(k * inter) <= SHARED_FLOATS
}

/// The experts' output for one token, weighted by `scores` and summed: `x` [D]
/// (the model's float type), `idx` [k] uint32, `scores` [k] -> [D].
#[allow(clippy::too_many_arguments)]
pub fn decode(x: &Array, idx: &Array, scores: &Array, gate: Q4, up: Q4, down: Q4, group: i32, oai: bool) -> Result<Array> {
    let dtype = x.dtype();
    let k = idx.shape()[0];
    let (hidden, inter) = (x.shape()[0], gate.weight.shape()[1]);
    let dummy = Array::from_slice(&[0f32], &[1]).as_dtype(dtype)?;
    let bias = gate.bias.is_some();
    KERNELS.with(|ks| {
        let (gu, dn) = ks.as_ref().ok_or_else(|| Error::Mlx("the MoE decode kernels could not be built".into()))?;
        let act = gu.apply(&Launch {
            inputs: &[x, idx, gate.weight, gate.scales, gate.biases, up.weight, up.scales, up.biases, gate.bias.unwrap_or(&dummy), up.bias.unwrap_or(&dummy)],
            ints: &[("IN", hidden), ("OUT", inter), ("GS", group), ("ACT", oai as i32)],
            bools: &[("BIAS", bias)],
            types: &[("T", dtype)],
            outputs: &[(&[k, inter], dtype)],
            grid: (32 * inter, k, 1),
            block: (256, 1, 1),
        })?;
        let y = dn.apply(&Launch {
            inputs: &[&act[0], idx, scores, down.weight, down.scales, down.biases, down.bias.unwrap_or(&dummy)],
            ints: &[("IN", inter), ("OUT", hidden), ("GS", group), ("K", k)],
            bools: &[("BIAS", bias)],
            types: &[("T", dtype)],
            outputs: &[(&[hidden], dtype)],
            grid: (32 * hidden, 1, 1),
            block: (256, 1, 1),
        })?;
        y.into_iter().next().ok_or_else(|| Error::Mlx("the MoE down kernel gave no output".into()))
    })
}

