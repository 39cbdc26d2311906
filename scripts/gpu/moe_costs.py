"""Where a Qwen3-30B-A3B layer spends its time on the GPU, MLX ops only.

Prefill (N tokens, 128 experts, 8 per token, 4-bit affine g64 bf16): the MoE
block as mlx-lm runs it (tokens sorted by expert, `gather_qmm` with
sorted_indices) against experts dequantized per projection and `gather_mm`, and
against Hearth's grouped tensor-core kernel (src/models/kernels/cuda/moe_grouped.rs, read from there).
Decode (one token, 48 layers chained in one evaluation): the whole layer, and the
layer without its router ops / with q, k, v as one matmul, to price each part.
usage: python3 moe_costs.py   (on the GPU machine, MLX CUDA build)"""
import pathlib
import re

import mlx.core as mx
from timing import timeit

# Hearth's grouped kernel, read from its Rust source (one copy).
_DIR = pathlib.Path(__file__).resolve().parents[2] / "src/models/kernels/cuda"
_SRC = (_DIR / "moe_grouped.rs").read_text()
_LAUNCHER = (_DIR / "mod.rs").read_text()  # MMA_HEADER, shared by the tensor-core kernels


def _raw(name, src=None):
    return re.search(rf'const {name}: &str = r#"(.*?)"#;', src or _SRC, re.S).group(1)


grouped = mx.fast.cuda_kernel(
    name="hearth_moe_grouped_q4", input_names=["x", "idx", "w", "s", "b", "bias"], output_names=["y"],
    source=_raw("GROUPED"), header=_raw("MMA_HEADER", _LAUNCHER))


def grouped_q4(x, idx, t, out):
    """Hearth's grouped kernel: sorted rows x [P, IN] times one projection of experts -> [P, out]."""
    w, s, b = t
    return grouped(
        inputs=[x, idx, w, s, b, mx.zeros((1,), dtype=x.dtype)],
        template=[("T", x.dtype), ("IN", x.shape[1]), ("OUT", out), ("GS", G), ("BIAS", False), ("F16", x.dtype == mx.float16)],
        grid=(out // 64 * 128, E, 1), threadgroup=(128, 1, 1), output_shapes=[(x.shape[0], out)], output_dtypes=[x.dtype])[0]


E, K, D, I, G = 128, 8, 2048, 768, 64
HQ, HKV, HD = 32, 4, 128


def q(shape, key):
    w = (mx.random.normal(shape, key=key) * 0.02).astype(mx.bfloat16)
    return mx.quantize(w, group_size=G, bits=4)


def experts():
    k = mx.random.split(mx.random.key(0), 3)
    return q((E, I, D), k[0]), q((E, I, D), k[1]), q((E, D, I), k[2])


def prefill(n):
    ex = experts()
    x = mx.random.normal((n, D)).astype(mx.bfloat16)
    logits = mx.random.normal((n, E))
    inds = mx.argpartition(-logits, K - 1, axis=-1)[:, :K].astype(mx.uint32)
    mx.eval(x, inds, *[a for t in ex for a in t])

    def sorted_rows():
        flat = inds.flatten()
        order = mx.argsort(flat)
        return x[order // K].reshape(-1, 1, D), flat[order], order

    def gather_qmm_path():
        rows, idx, order = sorted_rows()
        (gw, gs, gb), (uw, us, ub), (dw, ds, db) = ex
        g = mx.gather_qmm(rows, gw, gs, gb, rhs_indices=idx, transpose=True, group_size=G, bits=4, sorted_indices=True)
        u = mx.gather_qmm(rows, uw, us, ub, rhs_indices=idx, transpose=True, group_size=G, bits=4, sorted_indices=True)
        a = g * mx.sigmoid(g) * u
        return mx.gather_qmm(a, dw, ds, db, rhs_indices=idx, transpose=True, group_size=G, bits=4, sorted_indices=True)

    def dequant_path():
        rows, idx, order = sorted_rows()
        deq = [mx.dequantize(w, s, b, group_size=G, bits=4) for (w, s, b) in ex]
        g = mx.gather_mm(rows, deq[0].swapaxes(-1, -2), rhs_indices=idx, sorted_indices=True)
        u = mx.gather_mm(rows, deq[1].swapaxes(-1, -2), rhs_indices=idx, sorted_indices=True)
        a = g * mx.sigmoid(g) * u
        return mx.gather_mm(a, deq[2].swapaxes(-1, -2), rhs_indices=idx, sorted_indices=True)

    def kernel_path():
        rows, idx, order = sorted_rows()
        rows = rows.reshape(-1, D)
        g = grouped_q4(rows, idx, ex[0], I)
        u = grouped_q4(rows, idx, ex[1], I)
        return grouped_q4(g * mx.sigmoid(g) * u, idx, ex[2], D)

    ref = gather_qmm_path().reshape(-1, D).astype(mx.float32)
    scale = mx.abs(ref).max().item()
    for name, f in [("gather_qmm sorted (mlx-lm)", gather_qmm_path), ("dequantize + gather_mm", dequant_path),
                    ("Hearth grouped MMA kernel", kernel_path)]:
        try:
            y = f().reshape(-1, D).astype(mx.float32)
            diff = mx.abs(y - ref).max().item()
            t = timeit(f, 3)
            print(f"prefill N={n:5d} {name:30s} {t * 1e3:8.2f} ms/layer  x48 = {t * 48:6.3f} s   "
                  f"max|diff| {diff:.3g} of {scale:.3g}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"prefill N={n} {name}: failed: {e}", flush=True)
    print(f"  peak {mx.get_peak_memory() / 2**20:.0f} MB", flush=True)


def decode(ctx=128, layers=48):
    keys = mx.random.split(mx.random.key(1), 8)
    L = []
    for i in range(layers):
        k = mx.random.split(keys[i % 8], 6)
        L.append(dict(
            q=q((HQ * HD, D), k[0]), k=q((HKV * HD, D), k[1]), v=q((HKV * HD, D), k[2]),
            qkv=q(((HQ + 2 * HKV) * HD, D), k[3]), o=q((D, HQ * HD), k[4]), gate=q((E, D), k[5]),
            kc=mx.random.normal((1, HKV, ctx, HD)).astype(mx.bfloat16), vc=mx.random.normal((1, HKV, ctx, HD)).astype(mx.bfloat16)))
    ex = experts()
    n1 = mx.ones((D,), dtype=mx.bfloat16)
    n2 = mx.ones((HD,), dtype=mx.bfloat16)
    x0 = mx.random.normal((1, 1, D)).astype(mx.bfloat16)
    fixed = mx.array([[[3, 17, 40, 77, 90, 101, 120, 5]]], dtype=mx.uint32)
    fixed_s = mx.full((1, 1, K), 0.125, dtype=mx.bfloat16)
    mx.eval(L, ex, x0)

    def qm(x, t):
        return mx.quantized_matmul(x, *t, transpose=True, group_size=G, bits=4)

    def step(router=True, fused_qkv=False, moe=True):
        h = x0
        (gw, gs, gb), (uw, us, ub), (dw, ds, db) = ex
        for l in L:
            x = mx.fast.rms_norm(h, n1, 1e-6)
            if fused_qkv:
                qkv = qm(x, l["qkv"])
                qq, kk, vv = mx.split(qkv, [HQ * HD, (HQ + HKV) * HD], axis=-1)
            else:
                qq, kk, vv = qm(x, l["q"]), qm(x, l["k"]), qm(x, l["v"])
            qq = mx.fast.rms_norm(qq.reshape(1, 1, HQ, HD), n2, 1e-6).transpose(0, 2, 1, 3)
            kk = mx.fast.rms_norm(kk.reshape(1, 1, HKV, HD), n2, 1e-6).transpose(0, 2, 1, 3)
            vv = vv.reshape(1, 1, HKV, HD).transpose(0, 2, 1, 3)
            qq = mx.fast.rope(qq, HD, traditional=False, base=1e6, scale=1.0, offset=ctx)
            kk = mx.fast.rope(kk, HD, traditional=False, base=1e6, scale=1.0, offset=ctx)
            kc = mx.concatenate([l["kc"], kk], axis=2)
            vc = mx.concatenate([l["vc"], vv], axis=2)
            o = mx.fast.scaled_dot_product_attention(qq, kc, vc, scale=HD ** -0.5)
            h = h + qm(o.transpose(0, 2, 1, 3).reshape(1, 1, -1), l["o"])
            x = mx.fast.rms_norm(h, n1, 1e-6)
            if router:
                gates = mx.softmax(qm(x, l["gate"]), axis=-1, precise=True)
                inds = mx.argpartition(gates, kth=E - K, axis=-1)[..., E - K:]
                sc = mx.take_along_axis(gates, inds, axis=-1)
                sc = sc / sc.sum(axis=-1, keepdims=True)
            else:
                inds, sc = fixed, fixed_s
            if moe:
                xe = x.reshape(1, 1, 1, 1, -1)
                g = mx.gather_qmm(xe, gw, gs, gb, rhs_indices=inds, transpose=True, group_size=G, bits=4)
                u = mx.gather_qmm(xe, uw, us, ub, rhs_indices=inds, transpose=True, group_size=G, bits=4)
                y = mx.gather_qmm(g * mx.sigmoid(g) * u, dw, ds, db, rhs_indices=inds, transpose=True, group_size=G, bits=4)
                h = h + (y.squeeze(-2) * sc[..., None]).sum(axis=-2)
            else:
                h = h + x * sc.sum()
        return h

    for name, kw in [("whole layer (ops)", {}), ("q,k,v as one matmul", {"fused_qkv": True}),
                     ("no router ops", {"router": False}), ("no MoE matmuls", {"moe": False}),
                     ("attention only", {"router": False, "moe": False})]:
        t = timeit(lambda: step(**kw), 20)
        print(f"decode {name:28s} {t * 1e3:7.3f} ms/token  {t / layers * 1e6:6.1f} us/layer", flush=True)


if __name__ == "__main__":
    import sys
    print(mx.default_device(), flush=True)
    if "--prefill-only" not in sys.argv:
        decode()
    for n in (16, 32, 64, 128, 512, 2048):
        prefill(n)
