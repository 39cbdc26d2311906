"""Decode-path expert MLP on the GPU: MLX's gather_qmm path (what mlx-lm and
Hearth run today) against two custom CUDA kernels (MLX's custom-kernel API):
gate+up+activation fused, then down+weighted sum over the chosen experts.
4-bit affine weights, group 64, bf16, one token. Prints max |diff| and the
time per layer for each path, 48 layers chained per evaluation as in decode.
usage: python3 moe_decode_kernel.py   (on the GPU machine, MLX CUDA build)"""
import time

import mlx.core as mx

HEADER = """
// 32 4-bit values (one uint4) against 32 activations held transposed in shared
// memory (value v of chunk j at v * CHUNKS + j, so a warp's lanes, which take
// consecutive chunks, read consecutive words: no bank conflicts).
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
"""

# One warp per (chosen expert, output row): gate and up rows against x, then
# the activation; writes act[k, OUT]. x is staged once per block, transposed,
# with the sum of each 32-value chunk (for the affine biases).
GATE_UP = """
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
    float g = static_cast<float>(static_cast<T>(ag));
    float u = static_cast<float>(static_cast<T>(au));
    float silu = static_cast<float>(static_cast<T>(g / (1.f + __expf(-g))));
    act[kk * OUT + row] = static_cast<T>(silu * u);
  }
"""

# One warp per output row: the down rows of every chosen expert against its
# activation (all K experts' chunks spread over the lanes), weighted by the
# router scores and summed; writes y[OUT].
DOWN = """
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
  if (lane == 0) y[row] = static_cast<T>(total);
"""

gate_up_kernel = mx.fast.cuda_kernel(
    name="hearth_moe_gate_up_q4", input_names=["x", "idx", "w_gate", "s_gate", "b_gate", "w_up", "s_up", "b_up"],
    output_names=["act"], source=GATE_UP, header=HEADER)
down_kernel = mx.fast.cuda_kernel(
    name="hearth_moe_down_q4", input_names=["act", "idx", "scores", "w_down", "s_down", "b_down"],
    output_names=["y"], source=DOWN, header=HEADER)


def make_layer(E, H, I, key):
    def q(shape, k):
        w = (mx.random.normal(shape, key=k) * 0.02).astype(mx.bfloat16)
        return mx.quantize(w, group_size=64, bits=4)
    k1, k2, k3 = mx.random.split(key, 3)
    return q((E, I, H), k1), q((E, I, H), k2), q((E, H, I), k3)


def mlx_path(x, idx, scores, layer):
    (gw, gs, gb), (uw, us, ub), (dw, ds, db) = layer
    xe = x.reshape(1, 1, 1, 1, -1)
    ii = idx.reshape(1, 1, -1)
    up = mx.gather_qmm(xe, uw, us, ub, rhs_indices=ii, transpose=True, group_size=64, bits=4)
    gate = mx.gather_qmm(xe, gw, gs, gb, rhs_indices=ii, transpose=True, group_size=64, bits=4)
    a = (gate * mx.sigmoid(gate)) * up
    y = mx.gather_qmm(a, dw, ds, db, rhs_indices=ii, transpose=True, group_size=64, bits=4)
    y = y.squeeze(-2)
    return (y * scores.reshape(1, 1, -1, 1)).sum(axis=-2).reshape(-1)


def kernel_path(x, idx, scores, layer, H, I, K):
    (gw, gs, gb), (uw, us, ub), (dw, ds, db) = layer
    act = gate_up_kernel(
        inputs=[x.reshape(-1), idx, gw, gs, gb, uw, us, ub],
        template=[("T", mx.bfloat16), ("IN", H), ("OUT", I), ("GS", 64)],
        grid=(32 * I, K, 1), threadgroup=(256, 1, 1),
        output_shapes=[(K, I)], output_dtypes=[mx.bfloat16])[0]
    return down_kernel(
        inputs=[act, idx, scores, dw, ds, db],
        template=[("T", mx.bfloat16), ("IN", I), ("OUT", H), ("GS", 64), ("K", K)],
        grid=(32 * H, 1, 1), threadgroup=(256, 1, 1),
        output_shapes=[(H,)], output_dtypes=[mx.bfloat16])[0]


def bench(name, E, K, H, I, layers=48, iters=20):
    key = mx.random.key(0)
    layer = make_layer(E, H, I, key)
    mx.eval(layer)
    x = (mx.random.normal((H,), key=mx.random.key(1))).astype(mx.bfloat16)
    idx = mx.random.permutation(E, key=mx.random.key(2))[:K].astype(mx.uint32)
    scores = mx.softmax(mx.random.normal((K,), key=mx.random.key(3))).astype(mx.bfloat16)
    want, got = mlx_path(x, idx, scores, layer), kernel_path(x, idx, scores, layer, H, I, K)
    mx.eval(want, got)
    diff = mx.abs(want.astype(mx.float32) - got.astype(mx.float32)).max().item()
    scale = mx.abs(want.astype(mx.float32)).max().item()
    res = {}
    for label, f in [("gather_qmm", lambda v: mlx_path(v, idx, scores, layer)),
                     ("custom", lambda v: kernel_path(v, idx, scores, layer, H, I, K))]:
        for warm in range(2):
            t0 = time.perf_counter()
            for _ in range(iters):
                v = x
                for _ in range(layers):  # chained as layers are in one decode step
                    v = f(v) * 0.5 + x
                mx.eval(v)
            dt = (time.perf_counter() - t0) / (iters * layers)
        res[label] = dt
    bytes_read = K * 3 * I * H * (0.5 + 4 / 64)
    print(f"{name}: max|diff| {diff:.3e} (out up to {scale:.3e}); per layer: gather_qmm {res['gather_qmm']*1e6:.1f} us, "
          f"custom {res['custom']*1e6:.1f} us ({res['gather_qmm']/res['custom']:.2f}x); "
          f"custom reads {bytes_read/res['custom']/1e9:.0f} GB/s", flush=True)


if __name__ == "__main__":
    print("mlx", mx.__version__, mx.default_device(), flush=True)
    bench("qwen3-30b-a3b (E=128 k=8 H=2048 I=768)", 128, 8, 2048, 768)
    bench("gpt-oss-20b   (E=32 k=4 H=2880 I=2880)", 32, 4, 2880, 2880)
