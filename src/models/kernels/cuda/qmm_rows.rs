//! A 4-bit affine matmul for a few rows (2 to 8: a decode step of a small
//! batch, a speculative verification) on the tensor cores, through MLX's
//! custom-kernel API (`kernels::cuda`).
//!
//! MLX's quantized matmul on CUDA (0.32) runs its matrix-vector kernel once
//! per row below 8 rows: 2 rows cost 1.2-1.9x one, 4 rows 2.2-3.4x, while 8
//! rows take a path that shares the weight reads and costs about one
//! (`scripts/gpu/qmm_rows.py` on an H200, docs/bench/h200-qmm-rows.txt).
//! Here each weight is read once for all rows:
//! a warp takes 16 output rows, dequantizes its share of their 4-bit words to
//! bf16/f16 (exact: a nibble n becomes 128 + n or 1024 + n by setting the
//! exponent bits, the offset taken back with the group's bias) and runs
//! `mma.m16n8k16` with the rows of `x` as the 8 columns. Within a 32-value
//! chunk, the k order the mma sees is permuted so that each lane's operands
//! come straight from one packed word and one 16-byte load of `x` (both
//! sides permuted alike, so the sum is unchanged). The scale and bias of a
//! group are applied to the group's partial sum in f32. The block's warps
//! split the row's groups and add their sums in shared memory.
//!
//! Runs on CUDA only, for bf16/f16 activations, groups of 32, 64 or 128,
//! in and out features multiples of the group and of 16; everything else
//! keeps MLX's `quantized_matmul`, and so do 1 and 8 rows (`USED_ROWS`).
//! `HEARTH_QMM_ROWS=0` turns it off (A/B).

use crate::models::kernels::cuda::{Kernel, Launch};
use crate::error::{Error, Result};
use mlx_rs::{Array, Dtype};

// Follows `MMA_HEADER` (the kernel's header is both).
const HEADER: &str = r#"
// Two nibbles 16 bits apart (bits s..s+3 and s+16..s+19) as a pair of
// bf16/f16 values MAGIC + n.
template <bool HALF>
__device__ inline unsigned int nib_pair(unsigned int q, int s) {
  return ((q >> s) & 0x000F000Fu) | (HALF ? 0x64006400u : 0x43004300u);
}
template <bool HALF>
__device__ inline float pair_sum(unsigned int u) {
  if (HALF) {
    return __half2float(__ushort_as_half((unsigned short)(u & 0xffffu))) +
           __half2float(__ushort_as_half((unsigned short)(u >> 16)));
  }
  return __uint_as_float(u << 16) + __uint_as_float(u & 0xffff0000u);
}
"#;

// y [B, OUT] = x [B, IN] . dequant(w)^T. Lane (g, t) of a warp (g = lane / 4,
// t = lane % 4) holds word t of each 32-value chunk for weight rows g and
// g + 8 of the warp's 16, and x's row g (zero past B) at the same 8 values.
// mma's A fragment wants, per lane, k pairs (2t, 2t+1) and (2t+8, 2t+9);
// they are mapped to the word's nibbles (0, 4), (1, 5) for the first mma and
// (2, 6), (3, 7) for the second, and x's pairs are permuted to match.
const QMM_ROWS: &str = r#"
  constexpr int WPR = IN / 8;
  constexpr int GPR = IN / GS;
  constexpr int CPG = GS / 32;
  constexpr float MAGIC = HALF ? 1024.f : 128.f;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int row = blockIdx.x * 16 + g;
  const unsigned int* wa = reinterpret_cast<const unsigned int*>(w) + (size_t)row * WPR + t;
  const unsigned int* wb = wa + (size_t)8 * WPR;
  const T* sa = scales + (size_t)row * GPR;
  const T* sb = sa + (size_t)8 * GPR;
  const T* za = biases + (size_t)row * GPR;
  const T* zb = za + (size_t)8 * GPR;
  const bool live = g < B;
  const uint4* xr = reinterpret_cast<const uint4*>(x + (size_t)(live ? g : 0) * IN) + t;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int grp = warp; grp < GPR; grp += KW) {
    unsigned int qa[CPG], qb[CPG];
    uint4 xv[CPG];
    #pragma unroll
    for (int q = 0; q < CPG; ++q) {
      const int ch = grp * CPG + q;
      qa[q] = wa[ch * 4];
      qb[q] = wb[ch * 4];
      xv[q] = live ? xr[ch * 4] : make_uint4(0u, 0u, 0u, 0u);
    }
    const float s0 = static_cast<float>(sa[grp]), s1 = static_cast<float>(sb[grp]);
    const float z0 = static_cast<float>(za[grp]) - MAGIC * s0, z1 = static_cast<float>(zb[grp]) - MAGIC * s1;
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    float xs = 0.f;
    #pragma unroll
    for (int q = 0; q < CPG; ++q) {
      const uint4 u = xv[q];
      xs += pair_sum<HALF>(u.x) + pair_sum<HALF>(u.y) + pair_sum<HALF>(u.z) + pair_sum<HALF>(u.w);
      mma_16816<HALF>(c, nib_pair<HALF>(qa[q], 0), nib_pair<HALF>(qb[q], 0), nib_pair<HALF>(qa[q], 4), nib_pair<HALF>(qb[q], 4),
                     __byte_perm(u.x, u.z, 0x5410), __byte_perm(u.x, u.z, 0x7632));
      mma_16816<HALF>(c, nib_pair<HALF>(qa[q], 8), nib_pair<HALF>(qb[q], 8), nib_pair<HALF>(qa[q], 12), nib_pair<HALF>(qb[q], 12),
                     __byte_perm(u.y, u.w, 0x5410), __byte_perm(u.y, u.w, 0x7632));
    }
    // x's sum over the group for row g, then for this lane's columns 2t, 2t+1.
    xs += __shfl_xor_sync(0xffffffffu, xs, 1);
    xs += __shfl_xor_sync(0xffffffffu, xs, 2);
    const float xa = __shfl_sync(0xffffffffu, xs, 8 * t);
    const float xb = __shfl_sync(0xffffffffu, xs, 8 * t + 4);
    acc[0] += s0 * c[0] + z0 * xa;
    acc[1] += s0 * c[1] + z0 * xb;
    acc[2] += s1 * c[2] + z1 * xa;
    acc[3] += s1 * c[3] + z1 * xb;
  }
  __shared__ float red[KW * 128];
  #pragma unroll
  for (int i = 0; i < 4; ++i) red[(warp * 4 + i) * 32 + lane] = acc[i];
  __syncthreads();
  if (warp == 0) {
    float o[4] = {0.f, 0.f, 0.f, 0.f};
    #pragma unroll
    for (int k = 0; k < KW; ++k) {
      #pragma unroll
      for (int i = 0; i < 4; ++i) o[i] += red[(k * 4 + i) * 32 + lane];
    }
    const int col = 2 * t;
    if (col < B) {
      y[(size_t)col * OUT + row] = static_cast<T>(o[0]);
      y[(size_t)col * OUT + row + 8] = static_cast<T>(o[2]);
    }
    if (col + 1 < B) {
      y[(size_t)(col + 1) * OUT + row] = static_cast<T>(o[1]);
      y[(size_t)(col + 1) * OUT + row + 8] = static_cast<T>(o[3]);
    }
  }
"#;

/// Warps per block, splitting a row's groups.
const KW: i32 = 8;
/// Rows of `x` the kernel takes at most (mma's n).
pub const MAX_ROWS: i32 = 8;
/// Rows it is used for: at 8 rows MLX leaves its per-row kernel for one that
/// shares the weight reads, and ties with this one (H200, 8B shapes,
/// `scripts/gpu/qmm_rows.py`, docs/bench/h200-qmm-rows.txt: gate 4096->14336
/// at 2 / 4 / 8 rows: MLX 77.9 / 142.7 / 40.8 us, this kernel 40.9 / 42.6 /
/// 44.1; one row: MLX 64.1).
const USED_ROWS: std::ops::RangeInclusive<i32> = 2..=7;
/// Weights it is used for at least (in x out): below, too few blocks share
/// the reads and MLX's path is as fast or faster — 4096->1024 at 2 rows MLX
/// 13.6 us, this kernel 16.2; Qwen3-30B-A3B's projections (2048->5120,
/// 4096->2048, router 2048->128) made 4 streams 203 tok/s with the kernel
/// against 277 without (H200, docs/bench/h200-batch-fold-qwen3-30b-a3b.txt);
/// from 4096x4096 up it wins (2 rows: 17.4 against 31.6 us).
const MIN_WEIGHTS: i64 = 4096 * 4096;

thread_local! {
    static KERNEL: Option<Kernel> =
        Kernel::new("hearth_qmm_rows_q4", &["x", "w", "scales", "biases"], &["y"], QMM_ROWS, &format!("{}{HEADER}", super::MMA_HEADER)).ok();
}

/// Whether the kernel may run here: a CUDA device, not turned off.
pub fn enabled() -> bool {
    crate::models::kernels::switches().qmm_rows
}

/// Whether the kernel is used for `rows` rows of `x` against 4-bit weights
/// of `out_f` x `in_f` in groups of `group`, activations of `dtype`.
pub fn fits(rows: i32, in_f: i32, out_f: i32, group: i32, dtype: Dtype) -> bool {
    USED_ROWS.contains(&rows)
        && in_f as i64 * out_f as i64 >= MIN_WEIGHTS
        && matches!(group, 32 | 64 | 128)
        && in_f > 0
        && in_f % group == 0
        && out_f > 0
        && out_f % 16 == 0
        && matches!(dtype, Dtype::Bfloat16 | Dtype::Float16)
}

/// `x` [.., in] (rows = the product of the leading axes, 2 to `MAX_ROWS`)
/// times the 4-bit affine weights `w` [out, in/8] (scales, biases [out,
/// in/group], of `x`'s type) transposed: [.., out].
pub fn matmul(x: &Array, w: &Array, scales: &Array, biases: &Array, group: i32) -> Result<Array> {
    let shape = x.shape();
    let in_f = shape.last().copied().unwrap_or(0);
    let rows: i32 = shape[..shape.len().saturating_sub(1)].iter().product();
    if !(1..=MAX_ROWS).contains(&rows) {
        return Err(Error::Mlx(format!("the batched 4-bit matmul takes 1 to {MAX_ROWS} rows, not {rows}")));
    }
    let out_f = w.shape()[0];
    let dtype = x.dtype();
    let mut out_shape = shape.to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = out_f;
    }
    KERNEL.with(|k| {
        let k = k.as_ref().ok_or_else(|| Error::Mlx("the batched 4-bit matmul kernel could not be built".into()))?;
        let y = k.apply(&Launch {
            inputs: &[x, w, scales, biases],
            ints: &[("IN", in_f), ("OUT", out_f), ("GS", group), ("B", rows), ("KW", KW)],
            bools: &[("HALF", dtype == Dtype::Float16)],
            types: &[("T", dtype)],
            outputs: &[(&out_shape, dtype)],
            grid: (32 * KW * (out_f / 16), 1, 1),
            block: (32 * KW, 1, 1),
        })?;
        y.into_iter().next().ok_or_else(|| Error::Mlx("the batched 4-bit matmul kernel gave no output".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::QuantSpec;
    use mlx_rs::random;

    fn normal(shape: &[i32], seed: u64, scale: f32, dtype: Dtype) -> Array {
        random::normal::<f32>(shape, 0.0, scale, &random::key(seed).unwrap()).unwrap().as_dtype(dtype).unwrap()
    }

    /// The shapes it is used for: large 4-bit weights at 2-7 rows (the 8B
    /// shapes measured faster), not the small ones MLX serves faster.
    #[test]
    fn qmm_rows_is_used_only_where_it_was_measured_to_win() {
        let bf = Dtype::Bfloat16;
        assert!(fits(2, 4096, 14336, 64, bf) && fits(7, 14336, 4096, 64, bf) && fits(4, 4096, 6144, 32, Dtype::Float16));
        assert!(!fits(1, 4096, 14336, 64, bf) && !fits(8, 4096, 14336, 64, bf), "1 and 8 rows: MLX's own path");
        assert!(!fits(2, 4096, 1024, 64, bf) && !fits(4, 2048, 128, 64, bf) && !fits(4, 2048, 5120, 64, bf), "small weights: MLX's path");
        assert!(!fits(2, 4096, 14336, 64, Dtype::Float32) && !fits(2, 4096, 14336, 256, bf) && !fits(2, 4096, 14344, 64, bf));
    }

    /// Against MLX's quantized_matmul on the same packed weights, for every
    /// row count it takes, both float types, every group size and a shape
    /// whose groups do not split evenly over the block's warps; the dispatch
    /// entry routes exactly the rows it is used for, and on a device without
    /// CUDA none.
    #[test]
    fn cuda_kernel_qmm_rows_matches_quantized_matmul_or_stays_off() {
        for (case, (in_f, out_f, group, dtype)) in
            [(4096, 4096, 64, Dtype::Bfloat16), (4096, 1024, 64, Dtype::Bfloat16), (2880, 2880, 32, Dtype::Bfloat16), (1536, 272, 128, Dtype::Float16), (192, 16, 64, Dtype::Bfloat16)]
                .into_iter()
                .enumerate()
        {
            let spec = QuantSpec::affine(group, 4);
            let wf = normal(&[out_f, in_f], 10 + case as u64, 0.02, dtype);
            let (w, s, b) = crate::models::nn::quant::quantize(&wf, spec).unwrap();
            let b = b.expect("affine biases");
            for rows in 1..=9 {
                let x = normal(&[rows, 1, in_f], 100 * case as u64 + rows as u64, 1.0, dtype);
                let want = crate::models::nn::quant::quantized_matmul(&x, &w, &s, Some(&b), spec).unwrap();
                // Within a few roundings of the output type at its magnitude.
                let close = |got: &Array, what: &str| {
                    assert_eq!(got.shape(), want.shape());
                    let (g32, w32) = (got.as_dtype(Dtype::Float32).unwrap(), want.as_dtype(Dtype::Float32).unwrap());
                    let d = g32.subtract(&w32).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
                    let top = w32.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                    println!("qmm_rows case {case} ({in_f}->{out_f}, group {group}, {dtype:?}) rows {rows} {what}: max |diff| {d} of {top}");
                    assert!(d <= top * 0.02 + 1e-3, "rows {rows} case {case} {what}: {d} off MLX's result (up to {top})");
                };
                // The kernel at exactly the rows and shapes it is used for.
                let routed = crate::models::kernels::quantized_matmul_rows(&x, &w, &s, Some(&b), spec).unwrap();
                let kernel = enabled() && fits(rows, in_f, out_f, group, dtype);
                assert_eq!(routed.is_some(), kernel, "{rows} rows (CUDA: {})", enabled());
                if let Some(r) = &routed {
                    close(r, "routed to the kernel");
                }
                if !enabled() || !(2..=MAX_ROWS).contains(&rows) {
                    continue;
                }
                // Every row count the kernel can take, also those MLX's own path serves.
                close(&matmul(&x, &w, &s, &b, group).unwrap(), "kernel");
            }
        }
    }
}
