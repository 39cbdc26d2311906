"""Reference perplexity from Python mlx-lm's own `perplexity.eval_ppl` over
the same token windows Hearth reads.
usage: mlx_lm_perplexity.py MODEL_DIR WINDOW TOKENS_JSON [KV_BITS]  -> JSON {"perplexity", "standard_error", "tokens"}
TOKENS_JSON holds the text's token ids; the first whole windows of WINDOW
tokens are evaluated, as `hearth eval perplexity --windows N` does. With
KV_BITS (8 or 4) each window runs through mlx-lm's QuantizedKVCache (group
64), as `hearth eval perplexity --kv-bits` does, and the loss is computed as
eval_ppl computes it."""
import contextlib
import json
import sys

import math

import mlx.core as mx
import mlx.nn as nn

import mlx_compat  # noqa: F401  (before mlx_lm: see mlx_compat.py)
from mlx_lm import load
from mlx_lm.models.cache import QuantizedKVCache
from mlx_lm.perplexity import eval_ppl


def quantized_ppl(model, data, bits):
    losses = []
    for row in data:
        b = row[None]
        cache = [QuantizedKVCache(group_size=64, bits=bits) for _ in model.layers]
        logits = model(b[:, :-1], cache=cache).astype(mx.float32)
        losses.append(nn.losses.cross_entropy(logits, b[:, 1:], reduction="none").flatten())
    losses = mx.concatenate(losses)
    ppl = math.exp(losses.mean().item())
    se = mx.sqrt(mx.var(losses, ddof=1)).item() / math.sqrt(losses.size)
    return ppl, ppl * se


def main():
    model, _ = load(sys.argv[1])
    window = int(sys.argv[2])
    ids = json.load(open(sys.argv[3]))
    n = len(ids) // window
    data = mx.array(ids[: n * window], dtype=mx.int32).reshape(n, window)
    # eval_ppl prints its progress on stdout; the answer is the only line there.
    bits = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with contextlib.redirect_stdout(sys.stderr):
        ppl, se = quantized_ppl(model, data, bits) if bits else eval_ppl(model, data, batch_size=4)
    print(json.dumps({"perplexity": ppl, "standard_error": se, "tokens": n * (window - 1)}))


if __name__ == "__main__":
    main()
