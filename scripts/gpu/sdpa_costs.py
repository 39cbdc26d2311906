"""What one decode step's attention core costs on the GPU at gpt-oss-20b's shape
(64 query heads, 8 KV heads, head dim 64, 24 layers chained in one evaluation,
256 cached positions): MLX's fused SDPA plain, with learned sinks, with a
sliding-window mask array, with both (gpt-oss's sliding layers), and RoPE
from a base against from a frequency table (YaRN). MLX ops only.
usage: python3 sdpa_costs.py   (on the GPU machine, MLX CUDA build)"""
import mlx.core as mx
from timing import timeit

HQ, HKV, HD, CTX, LAYERS, WINDOW = 64, 8, 64, 256, 24, 128


def main():
    print(mx.default_device(), flush=True)
    k = mx.random.normal((1, HKV, CTX, HD)).astype(mx.bfloat16)
    v = mx.random.normal((1, HKV, CTX, HD)).astype(mx.bfloat16)
    q0 = mx.random.normal((1, HQ, 1, HD)).astype(mx.bfloat16)
    sinks = mx.random.normal((HQ,)).astype(mx.bfloat16)
    mask = (mx.arange(CTX) >= CTX - WINDOW).reshape(1, CTX)
    freqs = mx.power(150000.0, mx.arange(0, HD, 2) / HD)
    mx.eval(k, v, q0, sinks, mask, freqs)

    def chain(**kw):
        q = q0
        for _ in range(LAYERS):
            q = mx.fast.scaled_dot_product_attention(q, k, v, scale=HD ** -0.5, **kw)
        return q

    def rope(**kw):
        q = q0
        for _ in range(LAYERS):
            q = mx.fast.rope(q, HD, traditional=False, scale=1.0, offset=CTX, **kw)
        return q

    cases = [("sdpa plain", lambda: chain()), ("sdpa sinks", lambda: chain(sinks=sinks)),
             ("sdpa window mask", lambda: chain(mask=mask)), ("sdpa sinks + window mask", lambda: chain(mask=mask, sinks=sinks)),
             ("rope base", lambda: rope(base=150000.0)), ("rope freqs (YaRN)", lambda: rope(base=None, freqs=freqs))]
    for name, f in cases:
        try:
            t = timeit(f, 30)
            print(f"{name:28s} {t * 1e3:7.3f} ms for {LAYERS} layers  {t / LAYERS * 1e6:6.1f} us/layer", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"{name}: failed: {e}", flush=True)


if __name__ == "__main__":
    main()
