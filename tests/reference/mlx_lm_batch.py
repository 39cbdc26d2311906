"""Python mlx-lm's continuous batching (BatchGenerator, as batch_generate
drives it) on `streams` prompts of `prompt` random token ids each, `gen`
greedy tokens per row with end tokens ignored: one JSON line per stream count,
with mlx-lm's own generation rate and the whole batch's tokens over its wall
time. The yardstick for `hearth bench --streams` (same lengths; the ids are
random, which changes nothing on random-weight or greedy-forced runs).
usage: mlx_lm_batch.py MODEL_DIR PROMPT GEN STREAMS[,STREAMS...] [REPS]"""
import json
import random
import sys
import time

import mlx.core as mx
import mlx_compat  # noqa: F401  (before mlx_lm: see mlx_compat.py)
from mlx_lm import load
from mlx_lm.generate import BatchGenerator

path, n, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
streams = [int(s) for s in sys.argv[4].split(",")]
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 2
model, tok = load(path)
vocab = model.args.vocab_size if hasattr(model, "args") else 32000
rng = random.Random(0)
base = [rng.randrange(100, vocab - 100) for _ in range(n + max(streams))]


def run(rows):
    g = BatchGenerator(model, max_tokens=gen, stop_tokens=None, completion_batch_size=max(rows, 1), prefill_batch_size=rows)
    g.insert([base[r:r + n] for r in range(rows)], [gen] * rows)
    tokens = 0
    t0 = time.perf_counter()
    with g.stats() as stats:
        while responses := g.next_generated():
            tokens += len(responses)
    wall = time.perf_counter() - t0
    g.close()
    return stats.generation_tps, tokens / wall


for rows in streams:
    runs = [run(rows) for _ in range(reps + 1)][1:]
    gen_tps = sorted(r[0] for r in runs)[len(runs) // 2]
    wall_tps = sorted(r[1] for r in runs)[len(runs) // 2]
    print(json.dumps({"engine": "mlx-lm", "case": "streams", "streams": rows, "prompt_tokens": n, "gen_tokens": gen,
                      "reps": reps, "aggregate_decode_tps": gen_tps, "wall_tps": wall_tps,
                      "peak_memory_mb": mx.get_peak_memory() / 1e6}), flush=True)
