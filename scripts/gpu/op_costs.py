"""What one op of a decode step costs the host on MLX's CUDA backend, by kind:
a chain of N ops of one kind is built, then `mx.async_eval` (MLX encodes every
op into CUDA graphs on this thread) and the wait for the GPU are timed apart.
Decode on CUDA is paced by that encoding (docs/PERFORMANCE.md), so this says
which ops are worth fusing away. Shapes are Qwen3-30B-A3B's (hidden 2048, 32
query heads and 4 KV heads of 128). MLX ops only, plus trivial custom kernels.
usage: python3 op_costs.py   (on the GPU machine, MLX CUDA build)"""
import time

import mlx.core as mx

N, H, HD, HQ, HKV, CTX = 480, 2048, 128, 32, 4, 256

COPY = """
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < N) out[i] = static_cast<T>(static_cast<float>(x[i]) * 0.5f);
"""
# The same kernel behind ~3 KB of comment: MLX assembles each call's source.
LONG = "\n".join("  // " + "padding to make the source the size of a real kernel " for _ in range(50)) + COPY


def timed(name, build, reps=5):
    mx.eval(build())
    mx.synchronize()
    rows = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = build()
        t1 = time.perf_counter()
        mx.async_eval(out)
        t2 = time.perf_counter()
        mx.eval(out)
        t3 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, t3 - t2))
    b, e, w = (sorted(r[i] for r in rows)[reps // 2] for i in range(3))
    print(f"{name:34s} build {b / N * 1e6:6.2f}  encode {e / N * 1e6:6.2f}  wait {w / N * 1e6:6.2f}  "
          f"encode+wait {(e + w) / N * 1e6:6.2f}  us/op", flush=True)


def main():
    print(mx.default_device(), "ops per chain:", N, flush=True)
    bf = mx.bfloat16
    x0 = mx.random.normal((1, H)).astype(bf)
    w = mx.ones((H,), dtype=bf)
    wq, sc, bi = mx.quantize((mx.random.normal((H, H)) * 0.02).astype(bf), group_size=64, bits=4)
    q0 = mx.random.normal((1, HQ, 1, HD)).astype(bf)
    k = mx.random.normal((1, HKV, CTX, HD)).astype(bf)
    v = mx.random.normal((1, HKV, CTX, HD)).astype(bf)
    cache = mx.zeros((1, HKV, N + 8, HD), dtype=bf)
    upd = mx.random.normal((1, HKV, 1, HD)).astype(bf)
    mx.eval(x0, w, wq, sc, bi, q0, k, v, cache, upd)
    short = mx.fast.cuda_kernel(name="probe_short", input_names=["x"], output_names=["out"], source=COPY)
    long = mx.fast.cuda_kernel(name="probe_long", input_names=["x"], output_names=["out"], source=LONG)

    def chain(f):
        def run():
            x = x0
            for _ in range(N):
                x = f(x)
            return x
        return run

    def kern(kernel, ints):
        def f(x):
            tmpl = [("T", bf), ("N", H)] + [(f"P{i}", i) for i in range(ints)]
            return kernel(inputs=[x], template=tmpl, grid=(H, 1, 1), threadgroup=(256, 1, 1),
                          output_shapes=[x.shape], output_dtypes=[bf])[0]
        return f

    def slice_updates():
        c = cache
        for i in range(N):
            c[:, :, i:i + 1, :] = upd
        return c

    def slices():
        return [cache[:, :, : i + 1, :] for i in range(N)]

    def sdpa(keys, capacity):
        # Keys as a KV cache holds them: the first `keys` of `capacity`
        # positions. MLX 0.32's CUDA backend takes cuDNN for one query when
        # the keys are >= 256 and the capacity is a multiple of 256, else its
        # own vector kernel.
        kc = mx.random.normal((1, HKV, capacity, HD)).astype(bf)
        vc = mx.random.normal((1, HKV, capacity, HD)).astype(bf)
        mx.eval(kc, vc)
        ks, vs = kc[:, :, :keys, :], vc[:, :, :keys, :]

        def run():
            q = q0
            for _ in range(N):
                q = mx.fast.scaled_dot_product_attention(q, ks, vs, scale=HD ** -0.5)
            return q
        return run

    cases = [
        ("add (elementwise)", chain(lambda x: x + x)),
        ("rms_norm", chain(lambda x: mx.fast.rms_norm(x, w, 1e-6))),
        ("4-bit matvec 2048x2048", chain(lambda x: mx.quantized_matmul(x, wq, sc, bi, transpose=True, group_size=64, bits=4))),
        ("custom kernel, 2 template args", chain(kern(short, 0))),
        ("custom kernel, 8 template args", chain(kern(short, 6))),
        ("custom kernel, 3 KB source", chain(kern(long, 0))),
        ("reshape + transpose (views)", chain(lambda x: x.reshape(1, 16, 128).transpose(1, 0, 2).reshape(1, H))),
        ("slice_update (KV write)", slice_updates),
        ("slice (KV fetch view)", slices),
        ("sdpa 256 keys of 256 (cuDNN)", sdpa(256, 256)),
        ("sdpa 256 keys of 264 (vector)", sdpa(256, 264)),
        ("sdpa 2048 keys of 2304 (cuDNN)", sdpa(2048, 2304)),
        ("sdpa 2048 keys of 2056 (vector)", sdpa(2048, 2056)),
        ("sdpa 8192 keys of 8448 (cuDNN)", sdpa(8192, 8448)),
        ("sdpa 8192 keys of 8200 (vector)", sdpa(8192, 8200)),
    ]
    for name, f in cases:
        try:
            timed(name, f)
        except Exception as e:  # noqa: BLE001
            print(f"{name}: failed: {e}", flush=True)


if __name__ == "__main__":
    main()
