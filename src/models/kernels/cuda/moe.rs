//! Mixture-of-experts blocks as custom CUDA kernels, through MLX's
//! custom-kernel API (mlx-c's `mlx_fast_cuda_kernel_*`; mlx-rs wraps none of
//! it). For one token, MLX's `gather_qmm` runs the three expert matmuls as
//! separate launches well under the memory bandwidth; for a prompt's rows
//! sorted by expert it stays far from the tensor cores. Here, for decode:
//!
//! 1. `gate_up`: one warp per (chosen expert, 4 rows) computes the gate and
//!    up rows of 4-bit affine weights against the token, adds the expert
//!    biases, and applies the activation (SiLU or gpt-oss's clamped SwiGLU);
//! 2. `down`: one warp per 2 output rows runs the down rows of all chosen
//!    experts (their chunks spread over the lanes), adds biases, and sums them
//!    weighted by the router scores;
//! 3. `route`: the router's softmax and top-k in one warp; `route_q4` the
//!    same after computing the router's logits from its 4-bit weights in the
//!    same launch.
//!
//! Prefill's kernel (rows sorted by expert, on tensor cores) is in
//! `kernels::cuda::moe_grouped`.
//!
//! The decode kernels stage inputs in shared memory transposed (value v of
//! 32-chunk j at `v * CHUNKS + j`) so the lanes of a warp read consecutive
//! words, and each lane holds a chunk in registers for all of its warp's rows:
//! with one row per warp (the first version) Nsight Compute timed them at
//! 21 us per Qwen3-30B-A3B layer each, 340-670 GB/s
//! (`docs/bench/h100-ncu-qwen3-30b-a3b-decode.txt`). All run only on CUDA
//! with 4-bit affine experts (group a multiple of 32); everything else keeps
//! the `gather_qmm` path, which Metal and CPUs run.
//! `HEARTH_MOE_KERNEL=0` turns them off (for A/B runs).
//!
//! Longer than 450 lines: the decode kernels and the routers share one
//! header of staging and 4-bit dot-product helpers, and their launch code.

use crate::models::kernels::cuda::{Kernel, Launch};
use crate::error::{Error, Result};
use mlx_rs::Array;

const HEADER: &str = r#"
// The 32 staged values of chunk j, into registers (reused by every row).
template <int CHUNKS>
__device__ inline void load_chunk(float* xv, const float* xt, int j) {
  #pragma unroll
  for (int v = 0; v < 32; ++v) xv[v] = xt[v * CHUNKS + j];
}
__device__ inline float dot_q4(uint4 p, const float* xv) {
  float acc = 0.f;
  unsigned int words[4] = {p.x, p.y, p.z, p.w};
  #pragma unroll
  for (int w = 0; w < 4; ++w) {
    #pragma unroll
    for (int n = 0; n < 8; ++n) {
      acc += static_cast<float>((words[w] >> (4 * n)) & 0xF) * xv[w * 8 + n];
    }
  }
  return acc;
}
// Stages n values of T (n a multiple of 32) into `dst` transposed per
// 32-chunk, and each chunk's sum into `sums`: 16-byte loads, a thread's first
// 8 issued before any is used (a value-at-a-time loop waited out one load
// latency per value: Nsight Compute timed the decode kernels at ~21 us each),
// the chunk sums reduced over the lanes that hold one chunk.
template <typename T, int CHUNKS>
__device__ inline void stage(const T* src, int n, float* dst, float* sums) {
  constexpr int PER = 16 / sizeof(T);
  constexpr int PARTS = 32 / PER;
  const int vecs = n / PER;
  constexpr int MAXV = 8;
  uint4 buf[MAXV];
  #pragma unroll
  for (int m = 0; m < MAXV; ++m) {
    const int i = threadIdx.x + m * blockDim.x;
    if (i < vecs) buf[m] = reinterpret_cast<const uint4*>(src)[i];
  }
  for (int m = 0; m * (int)blockDim.x < vecs; ++m) {
    const int i = threadIdx.x + m * blockDim.x;
    const bool ok = i < vecs;
    // Lanes of one chunk are consecutive and all in range together (vecs is
    // a multiple of PARTS).
    const unsigned mask = __ballot_sync(0xffffffff, ok);
    if (ok) {
      uint4 u;
      if (m < MAXV) {
        #pragma unroll
        for (int q = 0; q < MAXV; ++q) if (q == m) u = buf[q];
      } else {
        u = reinterpret_cast<const uint4*>(src)[i];
      }
      const T* h = reinterpret_cast<const T*>(&u);
      float acc = 0.f;
      #pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int c = i * PER + e;
        const int seg = c / (32 * CHUNKS);
        const int cc = c % (32 * CHUNKS);
        const float f = static_cast<float>(h[e]);
        dst[seg * 32 * CHUNKS + (cc % 32) * CHUNKS + cc / 32] = f;
        acc += f;
      }
      #pragma unroll
      for (int o = 1; o < PARTS; o <<= 1) acc += __shfl_xor_sync(mask, acc, o);
      if (i % PARTS == 0) sums[i / PARTS] = acc;
    }
  }
  __syncthreads();
}
__device__ inline float warp_sum(float v) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  return v;
}
"#;

// Each warp runs R consecutive rows (OUT % R == 0): the token's chunk is read
// from shared memory once into registers for all R gate and up rows, and the
// 2R weight loads of a chunk are in flight together.
const GATE_UP: &str = r#"
  constexpr int CH = IN / 32;
  __shared__ float xt[IN];
  __shared__ float xsum[CH];
  stage<T, CH>(x, IN, xt, xsum);
  int lane = threadIdx.x & 31;
  int row0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * R;
  int kk = blockIdx.y;
  if (row0 >= OUT) return;
  const size_t r0 = (size_t)idx[kk] * OUT + row0;
  const uint4* wg = reinterpret_cast<const uint4*>(w_gate) + r0 * CH;
  const uint4* wu = reinterpret_cast<const uint4*>(w_up) + r0 * CH;
  const T* sg = s_gate + r0 * (IN / GS);
  const T* bg = b_gate + r0 * (IN / GS);
  const T* su = s_up + r0 * (IN / GS);
  const T* bu = b_up + r0 * (IN / GS);
  float ag[R], au[R];
  #pragma unroll
  for (int r = 0; r < R; ++r) { ag[r] = 0.f; au[r] = 0.f; }
  float xv[32];
  for (int j = lane; j < CH; j += 32) {
    uint4 pg[R], pu[R];
    #pragma unroll
    for (int r = 0; r < R; ++r) { pg[r] = wg[r * CH + j]; pu[r] = wu[r * CH + j]; }
    load_chunk<CH>(xv, xt, j);
    const int grp = (j * 32) / GS;
    const float xs = xsum[j];
    #pragma unroll
    for (int r = 0; r < R; ++r) {
      const int g = r * (IN / GS) + grp;
      ag[r] += static_cast<float>(sg[g]) * dot_q4(pg[r], xv) + static_cast<float>(bg[g]) * xs;
      au[r] += static_cast<float>(su[g]) * dot_q4(pu[r], xv) + static_cast<float>(bu[g]) * xs;
    }
  }
  #pragma unroll
  for (int r = 0; r < R; ++r) {
    float gsum = warp_sum(ag[r]);
    float usum = warp_sum(au[r]);
    if (lane == 0) {
      const size_t rr = r0 + r;
      if (BIAS) {
        gsum += static_cast<float>(bias_gate[rr]);
        usum += static_cast<float>(bias_up[rr]);
      }
      // Rounded to the model's type where MLX's path holds it in that type.
      float g = static_cast<float>(static_cast<T>(gsum));
      float u = static_cast<float>(static_cast<T>(usum));
      float a;
      if (ACT == 1) {
        g = fminf(g, 7.0f);
        u = fminf(fmaxf(u, -7.0f), 7.0f);
        a = (u + 1.0f) * (g / (1.0f + __expf(-1.702f * g)));
      } else {
        a = static_cast<float>(static_cast<T>(g / (1.0f + __expf(-g)))) * u;
      }
      act[kk * OUT + row0 + r] = static_cast<T>(a);
    }
  }
"#;

// Each warp runs R consecutive output rows (OUT % R == 0) over all chosen
// experts; a chunk of one expert's activations is read into registers once
// for the R rows.
const DOWN: &str = r#"
  constexpr int CH = IN / 32;
  __shared__ float at[K * IN];
  __shared__ float asum[K * CH];
  stage<T, CH>(act, K * IN, at, asum);
  int lane = threadIdx.x & 31;
  int row0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * R;
  if (row0 >= OUT) return;
  float total[R];
  #pragma unroll
  for (int r = 0; r < R; ++r) total[r] = 0.f;
  float xv[32];
  for (int t = lane; t < K * CH; t += 32) {
    const int kk = t / CH, j = t % CH;
    const size_t rb = (size_t)idx[kk] * OUT + row0;
    uint4 p[R];
    #pragma unroll
    for (int r = 0; r < R; ++r) p[r] = reinterpret_cast<const uint4*>(w_down)[(rb + r) * CH + j];
    load_chunk<CH>(xv, at + kk * IN, j);
    const int grp = (j * 32) / GS;
    const float sc = static_cast<float>(scores[kk]);
    #pragma unroll
    for (int r = 0; r < R; ++r) {
      const size_t s = (rb + r) * (IN / GS) + grp;
      total[r] += (static_cast<float>(s_down[s]) * dot_q4(p[r], xv) + static_cast<float>(b_down[s]) * asum[t]) * sc;
    }
  }
  #pragma unroll
  for (int r = 0; r < R; ++r) {
    float sum = warp_sum(total[r]);
    if (lane == 0) {
      if (BIAS) {
        for (int kk = 0; kk < K; ++kk) {
          sum += static_cast<float>(bias_down[(size_t)idx[kk] * OUT + row0 + r]) * static_cast<float>(scores[kk]);
        }
      }
      y[row0 + r] = static_cast<T>(sum);
    }
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
    v[i] = e < E ? LOGIT(e) : -INFINITY;
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

// The router's logits for one token from its 4-bit affine weights ([E, IN/8]
// packed), all warps of the block taking rows in turn, rounded to T as MLX's
// quantized matmul returns them (then the bias added, as a separate add would);
// the first warp then runs ROUTE on them from shared memory. One launch
// instead of the router's matmul and `route`.
const ROUTER_LOGITS: &str = r#"
  constexpr int CH = IN / 32;
  constexpr int RPW = (E + WARPS - 1) / WARPS;
  __shared__ float xt[IN];
  __shared__ float xsum[CH];
  __shared__ T logits[E];
  stage<T, CH>(x, IN, xt, xsum);
  {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    float acc[RPW];
    #pragma unroll
    for (int r = 0; r < RPW; ++r) acc[r] = 0.f;
    float xv[32];
    for (int j = lane; j < CH; j += 32) {
      // All of this warp's rows' chunk j in flight at once (one row at a
      // time waited out a memory round trip per row: 17.6 us per launch).
      uint4 p[RPW];
      float sc[RPW], bi[RPW];
      const int grp = (j * 32) / GS;
      #pragma unroll
      for (int r = 0; r < RPW; ++r) {
        const int e = warp + r * WARPS;
        if (e < E) {
          p[r] = reinterpret_cast<const uint4*>(w)[(size_t)e * CH + j];
          sc[r] = static_cast<float>(s[e * (IN / GS) + grp]);
          bi[r] = static_cast<float>(b[e * (IN / GS) + grp]);
        }
      }
      load_chunk<CH>(xv, xt, j);
      #pragma unroll
      for (int r = 0; r < RPW; ++r) {
        if (warp + r * WARPS < E) acc[r] += sc[r] * dot_q4(p[r], xv) + bi[r] * xsum[j];
      }
    }
    #pragma unroll
    for (int r = 0; r < RPW; ++r) {
      const int e = warp + r * WARPS;
      const float v = warp_sum(acc[r]);
      if (lane == 0 && e < E) {
        T q = static_cast<T>(v);
        if (BIAS) q = static_cast<T>(static_cast<float>(q) + static_cast<float>(bias[e]));
        logits[e] = q;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x >= 32) return;
"#;

/// Rows per warp in `gate_up` and `down`: enough loads in flight per warp,
/// and still more blocks than the H100's 132 SMs for Qwen3-30B-A3B's shapes.
const GATE_UP_ROWS: i32 = 4;
const DOWN_ROWS: i32 = 2;

/// Largest static shared memory a block may use (48 KiB) in floats.
const SHARED_FLOATS: i32 = 48 * 1024 / 4;

// How ROUTE reads logit `e`: from the router matmul's output plus its bias
// (gpt-oss's 8-bit router; the sum rounded to T as MLX's add returns it, one
// op and a broadcast fewer per layer), or from `route_q4`'s shared logits.
const ROUTE_BIASED: &str = r#"
#define LOGIT(e) (BIAS ? static_cast<float>(static_cast<T>(static_cast<float>(logits[e]) + static_cast<float>(bias[e]))) : static_cast<float>(logits[e]))
"#;
const ROUTE_SHARED: &str = r#"
#define LOGIT(e) static_cast<float>(logits[e])
"#;

thread_local! {
    static KERNELS: Option<(Kernel, Kernel)> = build().ok();
    static ROUTER: Option<Kernel> = Kernel::new("hearth_moe_route", &["logits", "bias"], &["inds", "scores"], &format!("{ROUTE_BIASED}{ROUTE}"), "").ok();
    static GATED_ROUTER: Option<Kernel> = Kernel::new(
        "hearth_moe_route_q4",
        &["x", "w", "s", "b", "bias"],
        &["inds", "scores"],
        &format!("{ROUTER_LOGITS}{ROUTE_SHARED}{ROUTE}"),
        HEADER,
    )
    .ok();
}

/// How the router turns logits into experts and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Softmax over all experts, top-k, optionally renormalised (Qwen3-MoE).
    SoftmaxTopK { norm: bool },
    /// Top-k logits, softmax over those (gpt-oss).
    TopKSoftmax,
}

impl Routing {
    /// The kernels' MODE and NORM values.
    fn args(self) -> (i32, bool) {
        match self {
            Routing::SoftmaxTopK { norm } => (0, norm),
            Routing::TopKSoftmax => (1, false),
        }
    }
}

/// The chosen experts and their weights from a router kernel's outputs.
fn choice(out: Vec<Array>) -> Result<(Array, Array)> {
    let mut out = out.into_iter();
    match (out.next(), out.next()) {
        (Some(i), Some(s)) => Ok((i, s)),
        _ => Err(Error::Mlx("the MoE router kernel gave no output".into())),
    }
}

/// Whether `route` handles this many experts and choices.
pub fn routes(experts: i32, k: i32) -> bool {
    (1..=1024).contains(&experts) && (1..=32.min(experts)).contains(&k)
}

/// The router's choice for one token: `logits` [E] (the model's float type;
/// any shape of E values), plus the router's `bias` [E] where it has one ->
/// the `k` chosen experts [k] uint32 and their weights [k].
pub fn route(logits: &Array, bias: Option<&Array>, k: i32, routing: Routing) -> Result<(Array, Array)> {
    let dtype = logits.dtype();
    let experts = logits.size() as i32;
    let (mode, norm) = routing.args();
    ROUTER.with(|r| {
        let r = r.as_ref().ok_or_else(|| Error::Mlx("the MoE router kernel could not be built".into()))?;
        let out = r
            .apply(&Launch {
                inputs: &[logits, bias.unwrap_or(logits)],
                ints: &[("E", experts), ("K", k), ("MODE", mode)],
                bools: &[("NORM", norm), ("BIAS", bias.is_some())],
                types: &[("T", dtype)],
                outputs: &[(&[k], mlx_rs::Dtype::Uint32), (&[k], dtype)],
                grid: (32, 1, 1),
                block: (32, 1, 1),
            })?;
        choice(out)
    })
}

/// Warps of `route_q4`'s block; each takes up to `ROUTER_ROWS` experts.
const ROUTER_WARPS: i32 = 16;
const ROUTER_ROWS: i32 = 8;

/// Whether `route_q4` takes this router: `hidden` inputs staged in shared
/// memory next to the experts' logits, groups of whole 32-value chunks, at
/// most 128 experts (each warp's rows held in registers together).
pub fn routes_q4(hidden: i32, group: i32, experts: i32, k: i32) -> bool {
    routes(experts, k)
        && experts <= ROUTER_WARPS * ROUTER_ROWS
        && hidden % 32 == 0
        && group % 32 == 0
        && hidden + hidden / 32 + experts <= SHARED_FLOATS
}

/// The router's matmul and choice for one token in one launch: `x` [D] (or
/// [1, 1, D]: the kernel reads it flat, and a reshape is one more graph op),
/// the router's 4-bit affine weights `gate` ([E, D/8] packed, scales and
/// biases [E, D/group], bias [E] if any) -> the `k` chosen experts [k] uint32
/// and their weights [k]. The caller checks `routes_q4` and the dtypes.
pub fn route_q4(x: &Array, gate: Q4, group: i32, k: i32, routing: Routing) -> Result<(Array, Array)> {
    let dtype = x.dtype();
    let (hidden, experts) = (x.shape().last().copied().unwrap_or(0), gate.weight.shape()[0]);
    let (mode, norm) = routing.args();
    GATED_ROUTER.with(|r| {
        let r = r.as_ref().ok_or_else(|| Error::Mlx("the MoE router kernel could not be built".into()))?;
        let out = r
            .apply(&Launch {
                inputs: &[x, gate.weight, gate.scales, gate.biases, gate.bias.unwrap_or(x)],
                ints: &[("IN", hidden), ("GS", group), ("E", experts), ("K", k), ("MODE", mode), ("WARPS", ROUTER_WARPS)],
                bools: &[("NORM", norm), ("BIAS", gate.bias.is_some())],
                types: &[("T", dtype)],
                outputs: &[(&[k], mlx_rs::Dtype::Uint32), (&[k], dtype)],
                grid: (32 * ROUTER_WARPS, 1, 1),
                block: (32 * ROUTER_WARPS, 1, 1),
            })?;
        choice(out)
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
    crate::models::kernels::switches().moe
}

/// One expert projection's 4-bit affine parts: packed [E, out, in/8], scales and
/// biases [E, out, in/group], expert bias [E, out] if any.
pub struct Q4<'a> {
    pub weight: &'a Array,
    pub scales: &'a Array,
    pub biases: &'a Array,
    pub bias: Option<&'a Array>,
}

impl Q4<'_> {
    /// Whether scales, biases and the expert bias are all of `dtype` (the
    /// kernels read them as the activations' type).
    pub fn dtypes_are(&self, dtype: mlx_rs::Dtype) -> bool {
        self.scales.dtype() == dtype && self.biases.dtype() == dtype && self.bias.is_none_or(|b| b.dtype() == dtype)
    }
}

/// Whether `gate_up`/`down` handle these sizes (shared memory holds the token,
/// or all chosen experts' activations, as floats).
pub fn fits(hidden: i32, inter: i32, k: i32, group: i32) -> bool {
    let staged = |n: i32| n + n / 32;
    hidden % 32 == 0
        && inter % 32 == 0
        && inter % GATE_UP_ROWS == 0
        && hidden % DOWN_ROWS == 0
        && group % 32 == 0
        && staged(hidden) <= SHARED_FLOATS
        && staged(k * inter) <= SHARED_FLOATS
}

/// The experts' output for one token, weighted by `scores` and summed: `x` [D]
/// or [1, 1, D] (the model's float type), `idx` [k] uint32, `scores` [k] ->
/// the shape of `x` (no reshapes around the kernels: each is a graph op).
#[allow(clippy::too_many_arguments)]
pub fn decode(x: &Array, idx: &Array, scores: &Array, gate: Q4, up: Q4, down: Q4, group: i32, oai: bool) -> Result<Array> {
    let dtype = x.dtype();
    let k = idx.shape()[0];
    let (hidden, inter) = (x.shape().last().copied().unwrap_or(0), gate.weight.shape()[1]);
    let shape = x.shape().to_vec();
    // Without expert biases the kernels never read the bias input; `x` stands
    // in for it (a fresh placeholder array cost a conversion launch per layer).
    let bias = gate.bias.is_some();
    KERNELS.with(|ks| {
        let (gu, dn) = ks.as_ref().ok_or_else(|| Error::Mlx("the MoE decode kernels could not be built".into()))?;
        let act = gu.apply(&Launch {
            inputs: &[x, idx, gate.weight, gate.scales, gate.biases, up.weight, up.scales, up.biases, gate.bias.unwrap_or(x), up.bias.unwrap_or(x)],
            ints: &[("IN", hidden), ("OUT", inter), ("GS", group), ("ACT", oai as i32), ("R", GATE_UP_ROWS)],
            bools: &[("BIAS", bias)],
            types: &[("T", dtype)],
            outputs: &[(&[k, inter], dtype)],
            grid: (32 * inter / GATE_UP_ROWS, k, 1),
            block: (256, 1, 1),
        })?;
        let y = dn.apply(&Launch {
            inputs: &[&act[0], idx, scores, down.weight, down.scales, down.biases, down.bias.unwrap_or(x)],
            ints: &[("IN", inter), ("OUT", hidden), ("GS", group), ("K", k), ("R", DOWN_ROWS)],
            bools: &[("BIAS", bias)],
            types: &[("T", dtype)],
            outputs: &[(&shape, dtype)],
            grid: (32 * hidden / DOWN_ROWS, 1, 1),
            block: (256, 1, 1),
        })?;
        y.into_iter().next().ok_or_else(|| Error::Mlx("the MoE down kernel gave no output".into()))
    })
}
