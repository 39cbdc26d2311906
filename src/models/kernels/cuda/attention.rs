//! One decode step's attention (one query row over the KV cache) as one CUDA
//! kernel, through MLX's custom-kernel API (`kernels::cuda`).
//!
//! MLX's own SDPA is costly for the host on CUDA, and decode there is paced by
//! the host (`kernels::cuda::decode`): `scripts/gpu/op_costs.py` timed its encoding at
//! 14-47 us per call once the keys are a slice of a cache whose length is a
//! multiple of 256 (MLX then takes cuDNN, for mlx-lm's cache and Hearth's
//! alike) and 4.5-10 us below that, against 3-4 us for a custom kernel. Its
//! output also needs a transpose and a reshape before the output projection.
//!
//! This kernel reads the keys and values where the cache holds them (strided
//! views, no copy) and serves all query heads that share a KV head from one
//! read of each key (grouped-query attention). Blocks split the keys
//! (flash-decoding); the last block of a KV head to finish combines the
//! partial softmax sums, found through a counter per KV head that it resets
//! for the next call. Learned sinks (gpt-oss) join the softmax as one more
//! logit per head. The output is `[rows, 1, heads * dim]`, as the output
//! projection takes it. Metal and CPUs keep MLX's SDPA (`attention::Mask`).
//!
//! Several rows at once (a batch's decode step over merged caches,
//! `KvCache::merge`): each row's keys start at its own left padding, so the
//! padding is skipped rather than masked (MLX's SDPA with the padding mask
//! cost 2.76 ms a step at 8 rows of the 8B shape against 1.21 unmasked;
//! docs/bench/h200-batch-step-parts-llama-3.1-8b.txt). Validated and
//! measured on an H100 (+2 % at 8 streams, +10-13 % at 16 for the 8B shape),
//! so on by default; `HEARTH_BATCH_ATTENTION=0` turns it off
//! (`kernels::Switches::batch_attention`).

use crate::models::kernels::cuda::{Kernel, Launch};
use crate::error::{Error, Result};
use mlx_rs::{Array, Dtype};

// Template values: T (type), D (head dim), G (query heads per KV head), HKV,
// THREADS (= the tile of keys), SINKS, PADS (each row's first key in `pads`),
// SCALE (the softmax scale's f32 bits).
// Grid: rows x HKV x splits blocks; a row's keys of a KV head are cut into
// `splits` runs.
const SOURCE: &str = r#"
  constexpr int HG = THREADS / D;   // head groups when summing values
  constexpr int GPT = G / HG;       // heads per thread when summing values
  constexpr float LOG2E = 1.44269504089f;
  const float NEG_INF = __int_as_float(0xff800000);
  const int n = k_shape[2];
  const int rows = q_shape[0];
  const int splits = gridDim.x / (HKV * rows);
  const int row = blockIdx.x / (HKV * splits);
  const int head = blockIdx.x / splits;  // row * HKV + kvh: the counter's slot
  const int kvh = head % HKV;
  const int s = blockIdx.x % splits;
  const int first = PADS ? pads[row] : 0;
  const int per = (n - first + splits - 1) / splits;
  const int k0 = first + s * per;
  const int k1 = min(n, k0 + per);
  const int t = threadIdx.x;
  const int lane = t & 31, warp = t >> 5;

  __shared__ float qs[G][D];
  __shared__ float sc[G][THREADS];
  __shared__ float run_max[G], run_sum[G], rescale[G];
  __shared__ bool last;
  // Queries pre-scaled into the exp2 domain, as MLX's SDPA does.
  const float ql = __int_as_float(SCALE) * LOG2E;
  for (int i = t; i < G * D; i += THREADS) {
    const int g = i / D, d = i % D;
    qs[g][d] = static_cast<float>(q[row * q_strides[0] + (kvh * G + g) * q_strides[1] + d * q_strides[3]]) * ql;
  }
  if (t < G) {
    run_max[t] = NEG_INF;
    run_sum[t] = 0.f;
  }
  const int d = t % D;
  const int hg = t / D;
  float acc[GPT];
  #pragma unroll
  for (int j = 0; j < GPT; ++j) acc[j] = 0.f;
  __syncthreads();

  const T* kh = k + row * k_strides[0] + kvh * k_strides[1];
  const T* vh = v + row * v_strides[0] + kvh * v_strides[1];
  for (int base = k0; base < k1; base += THREADS) {
    const int cnt = min(THREADS, k1 - base);
    // Scores: one thread per key, all G heads; the row in 16-byte loads.
    if (t < cnt) {
      const T* kr = kh + static_cast<size_t>(base + t) * k_strides[2];
      float dot[G];
      #pragma unroll
      for (int g = 0; g < G; ++g) dot[g] = 0.f;
      #pragma unroll 4
      for (int i = 0; i < D; i += 8) {
        const uint4 raw = *reinterpret_cast<const uint4*>(kr + i);
        const T* kv8 = reinterpret_cast<const T*>(&raw);
        #pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float kf = static_cast<float>(kv8[e]);
          #pragma unroll
          for (int g = 0; g < G; ++g) dot[g] += qs[g][i + e] * kf;
        }
      }
      #pragma unroll
      for (int g = 0; g < G; ++g) sc[g][t] = dot[g];
    }
    __syncthreads();
    // Online softmax, one warp per head: the tile's weights replace its
    // scores, earlier sums are rescaled to the new maximum.
    for (int g = warp; g < G; g += THREADS / 32) {
      float m = NEG_INF;
      for (int j = lane; j < cnt; j += 32) m = fmaxf(m, sc[g][j]);
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
      const float nm = fmaxf(run_max[g], m);
      float sum = 0.f;
      for (int j = lane; j < cnt; j += 32) {
        const float p = exp2f(sc[g][j] - nm);
        sc[g][j] = p;
        sum += p;
      }
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
      if (lane == 0) {
        const float c = exp2f(run_max[g] - nm);
        rescale[g] = c;
        run_sum[g] = run_sum[g] * c + sum;
        run_max[g] = nm;
      }
    }
    __syncthreads();
    // Values: one thread per dim (and head group), coalesced rows.
    #pragma unroll
    for (int j = 0; j < GPT; ++j) acc[j] *= rescale[hg * GPT + j];
    #pragma unroll 4
    for (int j = 0; j < cnt; ++j) {
      const float vv = static_cast<float>(vh[static_cast<size_t>(base + j) * v_strides[2] + d]);
      #pragma unroll
      for (int h = 0; h < GPT; ++h) acc[h] += sc[hg * GPT + h][j] * vv;
    }
    __syncthreads();
  }

  // This block's partial sums: [G * D values][G maxima][G sums].
  float* pb = part + static_cast<size_t>(blockIdx.x) * G * (D + 2);
  #pragma unroll
  for (int j = 0; j < GPT; ++j) pb[(hg * GPT + j) * D + d] = acc[j];
  if (t < G) {
    pb[G * D + t] = run_max[t];
    pb[G * D + G + t] = run_sum[t];
  }
  __threadfence();
  __syncthreads();
  if (t == 0) {
    // MLX hands inputs over as const; the counter is this kernel's own.
    int* c = const_cast<int*>(counter) + head;
    last = splits == 1 || atomicAdd(c, 1) == splits - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const float* pk = part + static_cast<size_t>(head) * splits * G * (D + 2);
  #pragma unroll
  for (int j = 0; j < GPT; ++j) {
    const int g = hg * GPT + j;
    float m = NEG_INF;
    for (int r = 0; r < splits; ++r) m = fmaxf(m, __ldcg(pk + r * G * (D + 2) + G * D + g));
    float sink = NEG_INF;
    if (SINKS) {
      sink = static_cast<float>(sinks[kvh * G + g]) * LOG2E;
      m = fmaxf(m, sink);
    }
    float l = SINKS ? exp2f(sink - m) : 0.f;
    float o = 0.f;
    for (int r = 0; r < splits; ++r) {
      const float* pr = pk + r * G * (D + 2);
      const float f = exp2f(__ldcg(pr + G * D + g) - m);
      l += f * __ldcg(pr + G * D + G + g);
      o += f * __ldcg(pr + g * D + d);
    }
    out[(static_cast<size_t>(row) * HKV * G + kvh * G + g) * D + d] = static_cast<T>(o / l);
  }
  if (t == 0 && splits > 1) *(const_cast<int*>(counter) + head) = 0;
"#;

thread_local! {
    static KERNEL: Option<Kernel> =
        Kernel::strided("hearth_decode_attention", &["q", "k", "v", "sinks", "pads", "counter"], &["out", "part"], SOURCE, "").ok();
}

/// Keys per block below which more splits stop paying (half a tile).
const MIN_KEYS_PER_SPLIT: i32 = 64;
/// Blocks to aim for at most, over all KV heads (an H100 has 132 SMs).
const MAX_BLOCKS: i32 = 256;

/// The most rows one launch takes (the engine's batch limit is 64).
pub const MAX_ROWS: i32 = 64;

/// The most keys the kernel takes; past them MLX's attention is faster.
/// Measured on an H100 (docs/bench/h100-decode-fusion-context-sweep.txt,
/// decode tok/s with the fused decode kernels on / off): Qwen3-30B-A3B shape
/// 171.7 / 161.3 at 2,048 keys, 142.8 / 172.6 at 4,096, 81.9 / 174.0 at
/// 32,768; Llama-3.1-8B shape 155.1 / 169.9 at 2,048, 71.5 / 103.4 at
/// 32,768 (its split-K blocks each walk too many keys at long contexts).
pub const MAX_KEYS: i32 = 2048;

/// A counter per row and KV head for the kernel's last-block hand-off:
/// zeros, kept by the attention layer (each layer its own, so no two
/// launches in flight share one). None where the kernel does not run.
pub fn counter(kv_heads: i32) -> Option<Array> {
    if !crate::models::kernels::cuda::decode::enabled() {
        return None;
    }
    let c = mlx_rs::ops::zeros::<i32>(&[MAX_ROWS * kv_heads]).ok()?;
    mlx_rs::transforms::eval([&c]).ok()?;
    Some(c)
}

/// Threads of a block (and keys of a tile) for heads of `dim` values.
fn threads(dim: i32) -> i32 {
    dim.max(128)
}

/// Whether the kernel takes heads of `dim` values with `group` query heads
/// per KV head (the value pass spreads the group over the block's threads).
fn takes(dim: i32, group: i32) -> bool {
    matches!(dim, 64 | 128 | 256) && (1..=16).contains(&group) && group % (threads(dim) / dim) == 0
}

/// One query per row, `q` ([rows, heads, 1, dim], any strides), over `k`,
/// `v` ([rows, kv heads, n, dim] views of a KV cache: rows of `dim`
/// contiguous values, 16-byte aligned), row r's keys from `pads[r]` on
/// (int32 [rows], a merged cache's left padding; all keys without it), with
/// optional `sinks` ([heads]), scaled by `scale`: `[rows, 1, heads * dim]`.
/// None where it does not apply (not CUDA, turned off, other types or
/// shapes, more than `MAX_ROWS` rows).
pub fn attend(q: &Array, k: &Array, v: &Array, sinks: Option<&Array>, pads: Option<&Array>, counter: &Array, scale: f32) -> Result<Option<Array>> {
    let (qs, ks) = (q.shape(), k.shape());
    if qs.len() != 4 || ks.len() != 4 || v.shape() != ks || qs[2] != 1 || ks[0] != qs[0] || !(1..=MAX_ROWS).contains(&qs[0]) {
        return Ok(None);
    }
    let (rows, heads, dim, kv_heads, n) = (qs[0], qs[1], qs[3], ks[1], ks[2]);
    if pads.is_some_and(|p| p.shape() != [rows] || p.dtype() != Dtype::Int32) {
        return Ok(None);
    }
    let dtype = q.dtype();
    if !crate::models::kernels::cuda::decode::enabled()
        || !matches!(dtype, Dtype::Bfloat16 | Dtype::Float16)
        || k.dtype() != dtype
        || v.dtype() != dtype
        || ks[3] != dim
        || !(1..=MAX_KEYS).contains(&n)
        || kv_heads < 1
        || heads % kv_heads != 0
        || !takes(dim, heads / kv_heads)
        || (counter.size() as i32) < rows * kv_heads
        || counter.dtype() != Dtype::Int32
        || sinks.is_some_and(|s| s.size() as i32 != heads)
    {
        return Ok(None);
    }
    let group = heads / kv_heads;
    let threads = threads(dim);
    let splits = ((n + MIN_KEYS_PER_SPLIT - 1) / MIN_KEYS_PER_SPLIT).clamp(1, (MAX_BLOCKS / (rows * kv_heads)).max(1));
    let blocks = rows * kv_heads * splits;
    KERNEL.with(|kernel| {
        let kernel = kernel.as_ref().ok_or_else(|| Error::Mlx("the decode attention kernel could not be built".into()))?;
        let out = kernel.apply(&Launch {
            inputs: &[q, k, v, sinks.unwrap_or(q), pads.unwrap_or(counter), counter],
            ints: &[("D", dim), ("G", group), ("HKV", kv_heads), ("THREADS", threads), ("SCALE", scale.to_bits() as i32)],
            bools: &[("SINKS", sinks.is_some()), ("PADS", pads.is_some())],
            types: &[("T", dtype)],
            outputs: &[(&[rows, 1, heads * dim], dtype), (&[blocks * group * (dim + 2)], Dtype::Float32)],
            grid: (blocks * threads, 1, 1),
            block: (threads, 1, 1),
        })?;
        Ok(out.into_iter().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nn::attention::Mask;
    use crate::models::cache::KvCache;
    use mlx_rs::random;

    fn normal(shape: &[i32], seed: u64) -> Array {
        random::normal::<f32>(shape, 0.0, 1.0, &random::key(seed).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap()
    }

    /// Against MLX's SDPA on the same cache views: full caches of several
    /// lengths (one split, many, a length past a whole number of tiles),
    /// head dims 64/128/256, group sizes 1-8, learned sinks, and a sliding
    /// window cut out of the cache (a view that does not start at 0).
    #[test]
    fn cuda_decode_attention_matches_mlx_sdpa_or_stays_off() {
        let cases = [
            // (heads, kv heads, dim, cached before the query, sinks, window)
            (32, 4, 128, 37, false, None),
            (32, 4, 128, 2100, false, None),
            (64, 8, 64, 200, true, Some(128)),
            (64, 8, 64, 5000, true, None),
            (8, 8, 256, 700, false, None),
            (16, 2, 64, 1, false, None),
        ];
        for (case, (heads, kv, dim, before, with_sinks, window)) in cases.into_iter().enumerate() {
            let seed = 100 * case as u64;
            let mut cache = match window {
                Some(w) => KvCache::windowed(w),
                None => KvCache::new(),
            };
            cache.update_and_fetch(&normal(&[1, kv, before, dim], seed), &normal(&[1, kv, before, dim], seed + 1)).unwrap();
            let mask = crate::models::nn::attention::attention_mask(1, &mut cache).unwrap();
            let (k, v) = cache.update_and_fetch(&normal(&[1, kv, 1, dim], seed + 2), &normal(&[1, kv, 1, dim], seed + 3)).unwrap();
            let q = normal(&[1, heads, 1, dim], seed + 4);
            let sinks = with_sinks.then(|| normal(&[heads], seed + 5));
            let scale = (dim as f32).powf(-0.5);
            let (k, v) = mask.decode_keys(&k, &v).expect("a decode mask");
            let c = counter(kv);
            let got = match &c {
                Some(c) => attend(&q, &k, &v, sinks.as_ref(), None, c, scale).unwrap(),
                None => None,
            };
            if !crate::models::kernels::cuda::decode::enabled() {
                assert!(got.is_none() && c.is_none(), "the decode attention kernel ran without CUDA");
                continue;
            }
            let got = got.expect("the kernel applies to these heads");
            let want = Mask::None.attend(&q, &k, &v, scale, sinks.as_ref()).unwrap();
            let want = want.transpose_axes(&[0, 2, 1, 3]).unwrap().reshape(&[1, 1, heads * dim]).unwrap();
            assert_eq!(got.shape(), want.shape(), "case {case}");
            // Twice: the second call finds the counters reset by the first.
            for round in 0..2 {
                let got = if round == 0 { got.clone() } else { attend(&q, &k, &v, sinks.as_ref(), None, c.as_ref().unwrap(), scale).unwrap().unwrap() };
                let d = got.as_dtype(Dtype::Float32).unwrap().subtract(want.as_dtype(Dtype::Float32).unwrap()).unwrap();
                let d = d.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                println!("decode attention case {case} (heads {heads}/{kv}, dim {dim}, keys {}, sinks {with_sinks}, window {window:?}) round {round}: max |diff| {d}", k.shape()[2]);
                // Outputs are averages of unit-scale values: a bf16 step or two.
                assert!(d <= 0.02, "case {case} round {round}: differs from MLX's SDPA by {d}");
            }
        }
    }

    /// Several rows of a merged cache (different lengths, so left padding)
    /// against MLX's SDPA under the padding mask: each row attends over its
    /// own keys only.
    #[test]
    fn cuda_decode_attention_of_merged_rows_matches_masked_sdpa_or_stays_off() {
        for (case, (heads, kv, dim, lens, with_sinks)) in [(32, 8, 128, vec![37, 300, 5, 1200], false), (64, 8, 64, vec![200, 90], true), (16, 2, 64, vec![3, 1, 700, 64, 65, 128, 9, 2000], false)].into_iter().enumerate() {
            let seed = 1000 + 100 * case as u64;
            let parts: Vec<KvCache> = lens
                .iter()
                .enumerate()
                .map(|(r, &n)| {
                    let mut c = KvCache::new();
                    c.update_and_fetch(&normal(&[1, kv, n, dim], seed + 2 * r as u64), &normal(&[1, kv, n, dim], seed + 2 * r as u64 + 1)).unwrap();
                    c
                })
                .collect();
            let rows = lens.len() as i32;
            let mut cache = KvCache::merge(parts).unwrap();
            let mask = crate::models::nn::attention::attention_mask(1, &mut cache).unwrap();
            let pads = Array::from_slice(cache.pads().unwrap(), &[rows]);
            let (k, v) = cache.update_and_fetch(&normal(&[rows, kv, 1, dim], seed + 50), &normal(&[rows, kv, 1, dim], seed + 51)).unwrap();
            let q = normal(&[rows, heads, 1, dim], seed + 52);
            let sinks = with_sinks.then(|| normal(&[heads], seed + 53));
            let scale = (dim as f32).powf(-0.5);
            let c = counter(kv);
            let got = match &c {
                Some(c) => attend(&q, &k, &v, sinks.as_ref(), Some(&pads), c, scale).unwrap(),
                None => None,
            };
            if !crate::models::kernels::cuda::decode::enabled() {
                assert!(got.is_none() && c.is_none(), "the decode attention kernel ran without CUDA");
                continue;
            }
            let want = mask.attend(&q, &k, &v, scale, sinks.as_ref()).unwrap();
            let want = want.transpose_axes(&[0, 2, 1, 3]).unwrap().reshape(&[rows, 1, heads * dim]).unwrap();
            for round in 0..2 {
                let got = if round == 0 { got.clone().expect("the kernel applies") } else { attend(&q, &k, &v, sinks.as_ref(), Some(&pads), c.as_ref().unwrap(), scale).unwrap().unwrap() };
                assert_eq!(got.shape(), want.shape(), "case {case}");
                let d = got.as_dtype(Dtype::Float32).unwrap().subtract(want.as_dtype(Dtype::Float32).unwrap()).unwrap();
                let d = d.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                println!("decode attention of merged rows case {case} (rows {lens:?}, heads {heads}/{kv}, dim {dim}, sinks {with_sinks}) round {round}: max |diff| {d}");
                assert!(d <= 0.02, "case {case} round {round}: differs from MLX's masked SDPA by {d}");
            }
        }
    }
}
