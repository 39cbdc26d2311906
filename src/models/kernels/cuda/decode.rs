//! Fused CUDA kernels for the dense parts of a decode step, through MLX's
//! custom-kernel API (`kernels::cuda`).
//!
//! On CUDA, decode is paced by the host, not the GPU: MLX encodes every op of
//! the step into CUDA graphs on the calling thread, and `async_eval` blocks
//! once ten graphs are in flight. `hearth bench` on an H100 timed 2.0-2.6 ms
//! of graph building and 5.4-8.0 ms of encoding per Qwen3-30B-A3B token
//! against 5.3 ms of GPU time (`host_ms` in its output; Nsight Compute for
//! the GPU), so every op a layer sheds is time saved. Two kernels cut most of
//! the small ones:
//!
//! 1. `qkv_heads`: the stacked q/k/v projection's output for one token ->
//!    q, k, v as `[1, heads, 1, head_dim]`, with the per-head RMSNorm of q and
//!    k (Qwen3, Gemma 3) and RoPE (with its input scale: gpt-oss's YaRN)
//!    applied. It replaces three slices, three
//!    reshapes, two norms (each with a copy of its strided input), three
//!    transposes and two RoPE launches: thirteen ops, six kernels.
//! 2. `add_rms_norm`: the residual add and the RMSNorm that follows it, one
//!    launch giving both the new residual and its norm.
//!
//! Both round where MLX's ops round (to the model's type after the norm and
//! after RoPE), run only on CUDA for bf16/f16 activations, and leave every
//! other case to the ops path that Metal and CPUs run.
//! `HEARTH_DECODE_FUSION=0` turns them off (for A/B runs).

use crate::models::kernels::cuda::{Kernel, Launch};
use crate::error::{Error, Result};
use mlx_rs::{Array, Dtype};

// The sum of `v` over a block of WARPS warps, for every thread (`part`
// holds one partial per warp).
const HEADER: &str = r#"
template <int WARPS>
__device__ inline float block_sum(float v, float* part) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  float tot = 0.f;
  #pragma unroll
  for (int w = 0; w < WARPS; ++w) tot += part[w];
  return tot;
}
"#;

// One block per head (q heads, then k, then v), D/2 threads: thread i holds
// the pair (i, i + D/2) that RoPE rotates together (MLX's non-traditional
// layout). The sum of squares for the norm is reduced over the block.
const QKV_HEADS: &str = r#"
  constexpr int HALF = D / 2;
  const int head = blockIdx.x;
  const int i = threadIdx.x;
  const bool is_q = head < H;
  const bool is_k = !is_q && head < H + HKV;
  // Every global read first, so they share one memory round trip.
  float a = static_cast<float>(y[head * D + i]);
  float b = static_cast<float>(y[head * D + i + HALF]);
  float ba = 0.f, bb = 0.f;
  if (QKV_BIAS) {
    ba = static_cast<float>(bias[head * D + i]);
    bb = static_cast<float>(bias[head * D + i + HALF]);
  }
  const float f = inv_freq[i];
  const float at = static_cast<float>(pos[0]);
  float wa = 0.f, wb = 0.f;
  if (NORM && (is_q || is_k)) {
    const T* wt = is_q ? q_w : k_w;
    wa = static_cast<float>(wt[i]);
    wb = static_cast<float>(wt[i + HALF]);
  }
  if (QKV_BIAS) {
    // The projection's bias, added in T as MLX's add rounds it.
    a = static_cast<float>(static_cast<T>(a + ba));
    b = static_cast<float>(static_cast<T>(b + bb));
  }
  if (is_q || is_k) {
    if (NORM) {
      __shared__ float part[HALF / 32];
      const float tot = block_sum<HALF / 32>(a * a + b * b, part);
      const float r = rsqrtf(tot / D + __int_as_float(EPS));
      a = static_cast<float>(static_cast<T>(static_cast<float>(static_cast<T>(a * r)) * wa));
      b = static_cast<float>(static_cast<T>(static_cast<float>(static_cast<T>(b * r)) * wb));
    }
    if (SCALED) {
      // RoPEs that scale their input (YaRN's temperature, LongRoPE's mscale)
      // multiply in the model's type, as MLX's multiply does.
      const float sc = static_cast<float>(static_cast<T>(__int_as_float(SCALE)));
      a = static_cast<float>(static_cast<T>(a * sc));
      b = static_cast<float>(static_cast<T>(b * sc));
    }
    float s, c;
    sincosf(at * f, &s, &c);
    const float ra = a * c - b * s;
    const float rb = a * s + b * c;
    a = ra;
    b = rb;
  }
  T* dst = is_q ? q + head * D : (is_k ? k + (head - H) * D : v + (head - H - HKV) * D);
  dst[i] = static_cast<T>(a);
  dst[i + HALF] = static_cast<T>(b);
"#;

// One block of THREADS threads per row of N: the sum rounded to T (as MLX's add
// returns it; with BIAS, d + bias first), then RMSNorm of that sum.
const ADD_RMS_NORM: &str = r#"
  constexpr int PER = (N + THREADS - 1) / THREADS;
  const size_t row = blockIdx.x;
  const int t = threadIdx.x;
  // All loads before any store: the outputs could alias the inputs as far
  // as the compiler knows, so an interleaved loop waited out one memory
  // round trip per element (9 us per launch).
  float xv[PER], dv[PER], wv[PER], bv[PER];
  #pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c = t + j * THREADS;
    if (c < N) {
      xv[j] = static_cast<float>(x[row * N + c]);
      dv[j] = static_cast<float>(d[row * N + c]);
      wv[j] = static_cast<float>(w[c]);
      bv[j] = BIAS ? static_cast<float>(bias[c]) : 0.f;
    }
  }
  float ss = 0.f;
  #pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c = t + j * THREADS;
    if (c < N) {
      // The branch's bias (gpt-oss's output projection) first, in T.
      const float dj = BIAS ? static_cast<float>(static_cast<T>(dv[j] + bv[j])) : dv[j];
      const T s = static_cast<T>(xv[j] + dj);
      h[row * N + c] = s;
      xv[j] = static_cast<float>(s);
      ss += xv[j] * xv[j];
    }
  }
  __shared__ float part[THREADS / 32];
  const float tot = block_sum<THREADS / 32>(ss, part);
  const float r = rsqrtf(tot / N + __int_as_float(EPS));
  #pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c = t + j * THREADS;
    if (c < N) {
      out[row * N + c] = static_cast<T>(static_cast<float>(static_cast<T>(xv[j] * r)) * wv[j]);
    }
  }
"#;

/// Threads of `add_rms_norm`'s one block (each holds up to 32 values of the row).
const ADD_NORM_THREADS: i32 = 256;

thread_local! {
    static QKV: Option<Kernel> = Kernel::new("hearth_qkv_heads", &["y", "bias", "q_w", "k_w", "inv_freq", "pos"], &["q", "k", "v"], QKV_HEADS, HEADER).ok();
    static ADD_NORM: Option<Kernel> = Kernel::new("hearth_add_rms_norm", &["x", "d", "bias", "w"], &["h", "out"], ADD_RMS_NORM, HEADER).ok();
}

/// The position as a one-value array, made once per decode step: every layer
/// of a step rotates at the same offset, and a fresh host array per layer
/// was 48 more arrays to build and hand to the GPU per Qwen3-30B-A3B token.
fn position(offset: i32) -> Array {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(i32, Array)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((o, a)) if *o == offset => a.clone(),
            _ => {
                let a = Array::from_int(offset);
                *last = Some((offset, a.clone()));
                a
            }
        }
    })
}

/// Whether the fused kernels may run here: a CUDA device, not turned off.
pub fn enabled() -> bool {
    crate::models::kernels::switches().decode_fusion
}

fn float_type(d: Dtype) -> bool {
    matches!(d, Dtype::Bfloat16 | Dtype::Float16)
}

/// The per-head norms' weights and epsilon, both or neither.
pub struct HeadNorms<'a> {
    pub q: &'a Array,
    pub k: &'a Array,
    pub eps: f32,
}

/// Shapes of one attention's heads.
#[derive(Clone, Copy)]
pub struct Heads {
    pub q: i32,
    pub kv: i32,
    pub dim: i32,
}

/// Whether `qkv_heads` takes heads of `dim` values: pairs spread over whole
/// warps, at most 1024 threads.
fn takes(dim: i32) -> bool {
    dim % 64 == 0 && (64..=2048).contains(&dim)
}

/// One token's stacked q/k/v projection `y` ([1, 1, (q + 2 kv) * dim]), plus
/// its `bias` where it has one (Qwen2, gpt-oss) ->
/// q [1, q, 1, dim], k and v [1, kv, 1, dim], q and k normed per head (when
/// `norms`), multiplied by the RoPE's input scale and rotated by `inv_freq`
/// ([dim / 2] float32, the rotation per position of each pair) at position
/// `offset`. None where the kernel does not apply (not CUDA, turned off,
/// other types or shapes).
pub fn qkv_heads(y: &Array, bias: Option<&Array>, heads: Heads, norms: Option<HeadNorms>, rope: (&Array, f32), offset: i32) -> Result<Option<[Array; 3]>> {
    let (inv_freq, input_scale) = rope;
    let dtype = y.dtype();
    let Heads { q: nq, kv: nkv, dim } = heads;
    if !enabled()
        || !float_type(dtype)
        || !takes(dim)
        || y.size() as i64 != ((nq + 2 * nkv) * dim) as i64
        || inv_freq.size() as i32 != dim / 2
        || inv_freq.dtype() != Dtype::Float32
        || bias.is_some_and(|b| b.dtype() != dtype || b.size() != y.size())
        || norms.as_ref().is_some_and(|n| n.q.dtype() != dtype || n.k.dtype() != dtype || n.q.size() as i32 != dim || n.k.size() as i32 != dim)
    {
        return Ok(None);
    }
    let pos = position(offset);
    let (qw, kw, eps) = match &norms {
        Some(n) => (n.q, n.k, n.eps),
        None => (y, y, 0.0),
    };
    QKV.with(|kernel| {
        let kernel = kernel.as_ref().ok_or_else(|| Error::Mlx("the fused q/k/v kernel could not be built".into()))?;
        let out = kernel.apply(&Launch {
            inputs: &[y, bias.unwrap_or(y), qw, kw, inv_freq, &pos],
            ints: &[("H", nq), ("HKV", nkv), ("D", dim), ("EPS", eps.to_bits() as i32), ("SCALE", input_scale.to_bits() as i32)],
            bools: &[("NORM", norms.is_some()), ("SCALED", input_scale != 1.0), ("QKV_BIAS", bias.is_some())],
            types: &[("T", dtype)],
            outputs: &[(&[1, nq, 1, dim], dtype), (&[1, nkv, 1, dim], dtype), (&[1, nkv, 1, dim], dtype)],
            grid: ((nq + 2 * nkv) * dim / 2, 1, 1),
            block: (dim / 2, 1, 1),
        })?;
        let mut it = out.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(q), Some(k), Some(v)) => Ok(Some([q, k, v])),
            _ => Err(Error::Mlx("the fused q/k/v kernel gave too few outputs".into())),
        }
    })
}

/// `x + d` (`d + bias` first, where given) and the RMSNorm of it (weight
/// `w`, epsilon `eps`) over the last axis, for one row; None where the
/// kernel does not apply.
pub fn add_rms_norm(x: &Array, d: &Array, bias: Option<&Array>, w: &Array, eps: f32) -> Result<Option<(Array, Array)>> {
    let dtype = x.dtype();
    let n = *x.shape().last().unwrap_or(&0);
    if !enabled()
        || !float_type(dtype)
        || d.dtype() != dtype
        || w.dtype() != dtype
        || x.shape() != d.shape()
        || x.size() as i32 != n
        || w.size() as i32 != n
        || !(1..=ADD_NORM_THREADS * 32).contains(&n)
        || bias.is_some_and(|b| b.dtype() != dtype || b.size() as i32 != n)
    {
        return Ok(None);
    }
    ADD_NORM.with(|kernel| {
        let kernel = kernel.as_ref().ok_or_else(|| Error::Mlx("the fused add + RMSNorm kernel could not be built".into()))?;
        let shape = x.shape().to_vec();
        let out = kernel.apply(&Launch {
            inputs: &[x, d, bias.unwrap_or(x), w],
            ints: &[("N", n), ("EPS", eps.to_bits() as i32), ("THREADS", ADD_NORM_THREADS)],
            bools: &[("BIAS", bias.is_some())],
            types: &[("T", dtype)],
            outputs: &[(&shape, dtype), (&shape, dtype)],
            grid: (ADD_NORM_THREADS, 1, 1),
            block: (ADD_NORM_THREADS, 1, 1),
        })?;
        let mut it = out.into_iter();
        match (it.next(), it.next()) {
            (Some(h), Some(o)) => Ok(Some((h, o))),
            _ => Err(Error::Mlx("the fused add + RMSNorm kernel gave too few outputs".into())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nn::rope::{Rope, RopeScaling};
    use mlx_rs::ops::indexing::IndexOp;
    use mlx_rs::random;

    fn normal(shape: &[i32], seed: u64) -> Array {
        random::normal::<f32>(shape, 0.0, 1.0, &random::key(seed).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap()
    }

    fn max_diff(a: &Array, b: &Array) -> f32 {
        let d = a.as_dtype(Dtype::Float32).unwrap().subtract(b.as_dtype(Dtype::Float32).unwrap()).unwrap();
        d.abs().unwrap().max(None).unwrap().item_exact::<f32>()
    }

    /// The ops path the kernel replaces: slices, per-head norms, transposes, RoPE.
    fn ops_heads(y: &Array, h: Heads, norms: Option<&HeadNorms>, rope: &Rope, offset: i32) -> [Array; 3] {
        let (nq, nk) = (h.q * h.dim, h.kv * h.dim);
        let part = |a: Array, n: i32, w: Option<&Array>, eps: f32| {
            let a = a.reshape(&[1, 1, n, h.dim]).unwrap();
            let a = match w {
                Some(w) => mlx_rs::fast::rms_norm(&a, Some(w), eps).unwrap(),
                None => a,
            };
            a.transpose_axes(&[0, 2, 1, 3]).unwrap()
        };
        let eps = norms.map_or(0.0, |n| n.eps);
        let q = part(y.index((.., .., ..nq)), h.q, norms.map(|n| n.q), eps);
        let k = part(y.index((.., .., nq..nq + nk)), h.kv, norms.map(|n| n.k), eps);
        let v = part(y.index((.., .., nq + nk..)), h.kv, None, eps);
        [rope.apply(&q, offset).unwrap(), rope.apply(&k, offset).unwrap(), v]
    }

    #[test]
    fn cuda_kernel_qkv_heads_match_the_ops_path_or_stay_off() {
        let scaling = |json: &str| -> RopeScaling { serde_json::from_str(json).unwrap() };
        let llama3 = scaling(r#"{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#);
        // gpt-oss's: its temperature scales the input by ~1.35.
        let yarn = scaling(r#"{"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "original_max_position_embeddings": 4096}"#);
        for (case, (dim, with_norms, scaling, offset)) in
            [(128, true, None, 37), (64, false, Some(&llama3), 5000), (256, true, None, 0), (64, false, Some(&yarn), 300)].into_iter().enumerate()
        {
            let h = Heads { q: 8, kv: 2, dim };
            let y = normal(&[1, 1, (h.q + 2 * h.kv) * dim], 10 + case as u64);
            let (qw, kw) = (normal(&[dim], 20 + case as u64), normal(&[dim], 30 + case as u64));
            let norms = with_norms.then_some(HeadNorms { q: &qw, k: &kw, eps: 1e-6 });
            let rope = Rope::new(dim, 1_000_000.0, scaling).unwrap();
            assert!(rope.rotation(2 * dim).is_none(), "a RoPE of {dim} dims offered to rotate heads of {}", 2 * dim);
            let (inv, input_scale) = rope.rotation(dim).expect("a RoPE over whole heads");
            assert_eq!(input_scale > 1.3, case == 3, "only the YaRN case scales its input");
            let norms2 = with_norms.then_some(HeadNorms { q: &qw, k: &kw, eps: 1e-6 });
            // The YaRN case (gpt-oss's) also carries the projection's bias.
            let bias = (case == 3).then(|| normal(&[(h.q + 2 * h.kv) * dim], 40 + case as u64));
            let got = qkv_heads(&y, bias.as_ref(), h, norms2, (inv, input_scale), offset).unwrap();
            let y = crate::models::nn::layers::with_bias(y, bias.as_ref()).unwrap();
            if !enabled() {
                assert!(got.is_none(), "the fused q/k/v kernel ran without CUDA");
                continue;
            }
            let got = got.expect("the fused q/k/v kernel applies to these heads");
            let want = ops_heads(&y, h, norms.as_ref(), &rope, offset);
            for (name, g, w) in [("q", &got[0], &want[0]), ("k", &got[1], &want[1]), ("v", &got[2], &want[2])] {
                assert_eq!(g.shape(), w.shape(), "{name} shape (case {case})");
                let d = max_diff(g, w);
                println!("qkv_heads case {case} (dim {dim}, norms {with_norms}, offset {offset}): {name} max |diff| {d}");
                // One bf16 rounding step of values of a few units.
                assert!(d <= 0.04, "{name} differs from the ops path by {d} (case {case})");
            }
        }
    }

    #[test]
    fn cuda_kernel_add_rms_norm_matches_the_ops_path_or_stays_off() {
        for (n, seed) in [(2048, 1), (2880, 2), (96, 3)] {
            let (x, d, w) = (normal(&[1, 1, n], seed), normal(&[1, 1, n], seed + 10), normal(&[n], seed + 20));
            let got = add_rms_norm(&x, &d, None, &w, 1e-5).unwrap();
            if !enabled() {
                assert!(got.is_none(), "the fused add + RMSNorm kernel ran without CUDA");
                continue;
            }
            let (h, out) = got.expect("the fused add + RMSNorm kernel applies to one row");
            let want_h = x.add(&d).unwrap();
            let want = mlx_rs::fast::rms_norm(&want_h, Some(&w), 1e-5).unwrap();
            let (dh, dn) = (max_diff(&h, &want_h), max_diff(&out, &want));
            println!("add_rms_norm n {n}: sum max |diff| {dh}, norm max |diff| {dn}");
            assert_eq!(dh, 0.0, "the sum must round as MLX's add does");
            assert!(dn <= 0.04, "the norm differs from MLX's by {dn}");
        }
        // Two rows are left to the ops path.
        let x = normal(&[1, 2, 64], 9);
        assert!(add_rms_norm(&x, &x, None, &normal(&[64], 8), 1e-5).unwrap().is_none(), "two rows took the one-row kernel");
        // With the branch's bias (gpt-oss's output projection): as d + bias added first.
        let (x, d, b, w) = (normal(&[1, 1, 2880], 4), normal(&[1, 1, 2880], 5), normal(&[2880], 6), normal(&[2880], 7));
        if let Some((h, out)) = add_rms_norm(&x, &d, Some(&b), &w, 1e-5).unwrap() {
            let want_h = x.add(d.add(&b).unwrap()).unwrap();
            let want = mlx_rs::fast::rms_norm(&want_h, Some(&w), 1e-5).unwrap();
            let (dh, dn) = (max_diff(&h, &want_h), max_diff(&out, &want));
            println!("add_rms_norm with bias: sum max |diff| {dh}, norm max |diff| {dn}");
            assert_eq!(dh, 0.0, "the biased sum must round as MLX's adds do");
            assert!(dn <= 0.04, "the norm differs from MLX's by {dn}");
        }
    }
}
