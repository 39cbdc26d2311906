"""A few rows against 4-bit weights on the GPU: MLX's quantized_matmul (what
mlx-lm runs for a batch's decode step) against Hearth's tensor-core kernel
(src/models/kernels/cuda/qmm_rows.rs, read from there), at the Llama-3.1-8B
shapes, bf16, group 64. Prints max |diff| against a float reference and the
time per matmul for 1, 2, 4 and 8 rows. 24 different weight matrices per
shape, so the L2 cache does not hold them between calls.
usage: python3 qmm_rows.py   (on the GPU machine, MLX CUDA build)"""
import pathlib
import re
import sys
import time

import mlx.core as mx

_DIR = pathlib.Path(__file__).resolve().parents[2] / "src/models/kernels/cuda"
_SRC = (_DIR / "qmm_rows.rs").read_text()
_LAUNCHER = (_DIR / "mod.rs").read_text()  # MMA_HEADER, shared by the tensor-core kernels


def _raw(name, src=None):
    return re.search(rf'const {name}: &str = r#"(.*?)"#;', src or _SRC, re.S).group(1)


KW = int(sys.argv[1]) if len(sys.argv) > 1 else 8
kernel = mx.fast.cuda_kernel(name="hearth_qmm_rows_q4", input_names=["x", "w", "scales", "biases"],
                             output_names=["y"], source=_raw("QMM_ROWS"), header=_raw("MMA_HEADER", _LAUNCHER) + _raw("HEADER"))


def custom(x, w, s, b, out_f, in_f, rows, dtype):
    return kernel(inputs=[x, w, s, b],
                  template=[("T", dtype), ("IN", in_f), ("OUT", out_f), ("GS", 64), ("B", rows), ("KW", KW),
                            ("HALF", dtype == mx.float16)],
                  grid=(32 * KW * (out_f // 16), 1, 1), threadgroup=(32 * KW, 1, 1),
                  output_shapes=[(rows, out_f)], output_dtypes=[dtype])[0]


def timed(f, mats, xs, iters=10):
    for warm in range(2):
        t0 = time.perf_counter()
        for _ in range(iters):
            mx.eval([f(x, *m) for m, x in zip(mats, xs)])
        dt = (time.perf_counter() - t0) / (iters * len(mats))
    return dt


def case(name, in_f, out_f, dtype=mx.bfloat16, n=24):
    mats = []
    for i in range(n):
        wf = (mx.random.normal((out_f, in_f), key=mx.random.key(i)) * 0.02).astype(dtype)
        mats.append(mx.quantize(wf, group_size=64, bits=4))
    mx.eval(mats)
    for rows in (1, 2, 4, 8):
        xs = [mx.random.normal((rows, in_f), key=mx.random.key(100 + i)).astype(dtype) for i in range(n)]
        mx.eval(xs)
        w, s, b = mats[0]
        ref = (xs[0].astype(mx.float32) @ mx.dequantize(w, s, b, group_size=64, bits=4).astype(mx.float32).T)
        want = mx.quantized_matmul(xs[0], w, s, b, transpose=True, group_size=64, bits=4)
        dq = lambda x, w, s, b: mx.quantized_matmul(x, w, s, b, transpose=True, group_size=64, bits=4)
        line = f"{name} rows {rows}: mlx {timed(dq, mats, xs) * 1e6:7.1f} us"
        err_mlx = mx.abs(want.astype(mx.float32) - ref).max().item()
        if rows >= 2:
            got = custom(xs[0], w, s, b, out_f, in_f, rows, dtype)
            err = mx.abs(got.astype(mx.float32) - ref).max().item()
            ck = lambda x, w, s, b: custom(x, w, s, b, out_f, in_f, rows, dtype)
            t = timed(ck, mats, xs)
            gbs = out_f * in_f * (0.5 + 4 / 64) / t / 1e9
            line += f", kernel {t * 1e6:7.1f} us ({gbs:5.0f} GB/s); max|err| vs f32: mlx {err_mlx:.2e} kernel {err:.2e}"
        else:
            line += f"; max|err| vs f32: mlx {err_mlx:.2e}"
        print(line, flush=True)


if __name__ == "__main__":
    print("mlx", mx.__version__, mx.default_device(), "KW", KW, flush=True)
    case("q_proj 4096x4096   ", 4096, 4096)
    case("gate   4096->14336 ", 4096, 14336)
    case("down   14336->4096 ", 14336, 4096)
    case("kv     4096->1024  ", 4096, 1024)
    case("f16 gate 4096->14336", 4096, 14336, mx.float16, n=8)
