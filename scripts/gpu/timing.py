"""Wall time of an MLX computation on the GPU, shared by the cost scripts here."""
import time

import mlx.core as mx


def timeit(f, reps=5):
    """Seconds per evaluation of `f()`, after one warm-up (kernels compile on first use)."""
    mx.eval(f())
    mx.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        mx.eval(f())
    mx.synchronize()
    return (time.perf_counter() - t) / reps
