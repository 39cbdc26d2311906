//! Prefill's expert matmuls as one custom CUDA kernel (through MLX's
//! custom-kernel API, like `kernels::cuda::moe`'s decode kernels): a prompt's rows,
//! sorted by expert, times one projection of 4-bit affine experts on tensor
//! cores, each weight tile dequantized once for all of its expert's rows.
//! CUDA only (`HEARTH_MOE_KERNEL=0` turns it off with the decode kernels);
//! Metal and CPUs keep MLX's `gather_qmm`.

use crate::models::kernels::cuda::{Kernel, Launch};
use crate::models::kernels::cuda::moe::Q4;
use crate::error::{Error, Result};
use mlx_rs::Array;

// Many tokens' rows sorted by expert (prefill) times one projection of 4-bit
// affine experts, on tensor cores: block (expert `blockIdx.y`, output columns
// [64 * blockIdx.x, +64)) finds its expert's rows in the sorted `idx` by
// binary search, then for 64 of them at a time walks the input in steps of 64:
// the weights' 64 x 64 tile is dequantized to T once into shared memory (so
// every row of the expert reuses it), the rows' tile is copied beside it, and
// each of the 4 warps runs m16n8k16 MMAs for its 16 columns. MLX's
// `gather_qmm` over sorted rows runs far from the tensor cores' and memory's
// limits on CUDA (2.25 ms per Qwen3-30B-A3B layer at 128 tokens); MLX's
// dequantize + `gather_mm` writes every expert out in T first.
const GROUPED: &str = r#"
  constexpr int BN = 64, BK = 64, RT = 4, PAD = 72;
  __shared__ __align__(16) T ws[BN * PAD];
  __shared__ __align__(16) T xs[RT * 16 * PAD];
  __shared__ int range[2];
  const int P = idx_shape[0];
  const int e = blockIdx.y;
  const int n0 = blockIdx.x * BN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  if (tid < 2) {
    const uint32_t key = static_cast<uint32_t>(e + tid);
    int lo = 0, hi = P;
    while (lo < hi) {
      int mid = (lo + hi) >> 1;
      if (idx[mid] < key) lo = mid + 1; else hi = mid;
    }
    range[tid] = lo;
  }
  __syncthreads();
  const int start = range[0], end = range[1];
  for (int r0 = start; r0 < end; r0 += RT * 16) {
    const int rows = min(end - r0, RT * 16);
    const int nrt = (rows + 15) / 16;
    float acc[RT][2][4];
    #pragma unroll
    for (int a = 0; a < RT; ++a)
      #pragma unroll
      for (int b = 0; b < 2; ++b)
        #pragma unroll
        for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;
    for (int k0 = 0; k0 < IN; k0 += BK) {
      {
        // Thread -> one weight row's 32 values (one uint4), dequantized.
        const int row = tid >> 1, half = tid & 1;
        const size_t r = (size_t)e * OUT + n0 + row;
        const int kk = k0 + half * 32;
        const uint4 p = reinterpret_cast<const uint4*>(w)[(r * IN + kk) / 32];
        const float sc = static_cast<float>(s[r * (IN / GS) + kk / GS]);
        const float bi = static_cast<float>(b[r * (IN / GS) + kk / GS]);
        const unsigned int words[4] = {p.x, p.y, p.z, p.w};
        T* dst = ws + row * PAD + half * 32;
        #pragma unroll
        for (int q = 0; q < 4; ++q)
          #pragma unroll
          for (int n = 0; n < 8; ++n)
            dst[q * 8 + n] = static_cast<T>(sc * static_cast<float>((words[q] >> (4 * n)) & 0xF) + bi);
      }
      for (int i = tid; i < nrt * 16 * 8; i += 128) {
        const int row = i >> 3, c = i & 7;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row < rows) v = *reinterpret_cast<const uint4*>(x + (size_t)(r0 + row) * IN + k0 + c * 8);
        *reinterpret_cast<uint4*>(xs + row * PAD + c * 8) = v;
      }
      __syncthreads();
      #pragma unroll
      for (int ks = 0; ks < BK; ks += 16) {
        uint32_t bf[2][2];
        #pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const T* wr = ws + (warp * 16 + nt * 8 + g) * PAD + ks + 2 * t;
          bf[nt][0] = *reinterpret_cast<const uint32_t*>(wr);
          bf[nt][1] = *reinterpret_cast<const uint32_t*>(wr + 8);
        }
        #pragma unroll
        for (int rt = 0; rt < RT; ++rt) {
          if (rt < nrt) {
            const T* xr = xs + (rt * 16 + g) * PAD + ks + 2 * t;
            const uint32_t a0 = *reinterpret_cast<const uint32_t*>(xr);
            const uint32_t a1 = *reinterpret_cast<const uint32_t*>(xr + 8 * PAD);
            const uint32_t a2 = *reinterpret_cast<const uint32_t*>(xr + 8);
            const uint32_t a3 = *reinterpret_cast<const uint32_t*>(xr + 8 * PAD + 8);
            #pragma unroll
            for (int nt = 0; nt < 2; ++nt) mma_16816<F16>(acc[rt][nt], a0, a1, a2, a3, bf[nt][0], bf[nt][1]);
          }
        }
      }
      __syncthreads();
    }
    #pragma unroll
    for (int rt = 0; rt < RT; ++rt) {
      #pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int col = n0 + warp * 16 + nt * 8 + 2 * t;
        float b0 = 0.f, b1 = 0.f;
        if (BIAS) {
          b0 = static_cast<float>(bias[(size_t)e * OUT + col]);
          b1 = static_cast<float>(bias[(size_t)e * OUT + col + 1]);
        }
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = rt * 16 + g + 8 * h;
          if (row < rows) {
            T* dst = y + (size_t)(r0 + row) * OUT + col;
            dst[0] = static_cast<T>(acc[rt][nt][2 * h] + b0);
            dst[1] = static_cast<T>(acc[rt][nt][2 * h + 1] + b1);
          }
        }
      }
    }
  }
"#;

thread_local! {
    static GROUPED_KERNEL: Option<Kernel> =
        Kernel::new("hearth_moe_grouped_q4", &["x", "idx", "w", "s", "b", "bias"], &["y"], GROUPED, super::MMA_HEADER).ok();
}

/// Whether `grouped` handles a projection of these sizes in this type.
pub fn grouped_fits(in_f: i32, out_f: i32, group: i32, dtype: mlx_rs::Dtype) -> bool {
    matches!(dtype, mlx_rs::Dtype::Bfloat16 | mlx_rs::Dtype::Float16)
        && in_f % 64 == 0
        && out_f % 64 == 0
        && group % 32 == 0
        && in_f % group == 0
}

/// Rows sorted by expert times one projection of 4-bit affine experts (plus
/// its expert bias): `x` [P, in] (bf16 or f16), `idx` [P] uint32 ascending,
/// the expert of each row -> [P, out].
pub fn grouped(x: &Array, idx: &Array, q: &Q4, group: i32) -> Result<Array> {
    let dtype = x.dtype();
    let (rows, in_f) = (x.shape()[0], x.shape()[1]);
    let (experts, out_f) = (q.weight.shape()[0], q.weight.shape()[1]);
    // Without expert biases the kernels never read the bias input; `x` stands
    // in for it (a fresh placeholder array cost a conversion launch per layer).
    GROUPED_KERNEL.with(|k| {
        let k = k.as_ref().ok_or_else(|| Error::Mlx("the MoE grouped kernel could not be built".into()))?;
        let y = k.apply(&Launch {
            inputs: &[x, idx, q.weight, q.scales, q.biases, q.bias.unwrap_or(x)],
            ints: &[("IN", in_f), ("OUT", out_f), ("GS", group)],
            bools: &[("BIAS", q.bias.is_some()), ("F16", dtype == mlx_rs::Dtype::Float16)],
            types: &[("T", dtype)],
            outputs: &[(&[rows, out_f], dtype)],
            grid: (out_f / 64 * 128, experts, 1),
            block: (128, 1, 1),
        })?;
        y.into_iter().next().ok_or_else(|| Error::Mlx("the MoE grouped kernel gave no output".into()))
    })
}
