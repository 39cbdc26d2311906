"""Where a batched decode step's time goes, at 1 to 16 rows, on an mlx-lm model
folder (a `hearth synth` model): the whole step through mlx-lm's model with a
plain per-batch KV cache, then its parts priced alone with the model's own
weights — each projection kind over all layers (so the weights are read from
memory, not L2), the output head, and decode attention with no mask and with
the additive mask a left-padded batch needs (what mlx-lm's BatchKVCache and
Hearth's merged caches hand to SDPA). The parts that grow with the rows while
the weight reads do not are what keeps 8 streams from scaling.
usage: python3 batch_step.py MODEL_DIR [CONTEXT] [ROWS,...]"""
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache


def ms(f, iters=10):
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(iters):
            mx.eval(f())
        dt = (time.perf_counter() - t0) / iters
    return dt * 1e3


def main():
    path = sys.argv[1]
    ctx = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    rows = [int(r) for r in (sys.argv[3] if len(sys.argv) > 3 else "1,2,4,8,16").split(",")]
    model, _ = load(path)
    layers = model.layers
    att = layers[0].self_attn
    heads, kv_heads = att.n_heads, att.n_kv_heads
    hd = att.head_dim if hasattr(att, "head_dim") else model.args.hidden_size // heads
    print(f"mlx {mx.__version__} {mx.default_device()} {path}: {len(layers)} layers, heads {heads}/{kv_heads} x {hd}, context {ctx}", flush=True)
    kinds = {
        "q_proj": lambda l: l.self_attn.q_proj, "k_proj": lambda l: l.self_attn.k_proj,
        "v_proj": lambda l: l.self_attn.v_proj, "o_proj": lambda l: l.self_attn.o_proj,
        "gate_proj": lambda l: l.mlp.gate_proj, "up_proj": lambda l: l.mlp.up_proj,
        "down_proj": lambda l: l.mlp.down_proj,
    }
    head = model.lm_head if hasattr(model, "lm_head") else model.model.embed_tokens.as_linear
    for b in rows:
        cache = make_prompt_cache(model)
        prompt = mx.random.randint(0, 1000, (b, ctx), key=mx.random.key(b))
        mx.eval(model(prompt, cache=cache))
        mx.eval([c.state for c in cache])
        tok = mx.random.randint(0, 1000, (b, 1), key=mx.random.key(7))
        step = ms(lambda: model(tok, cache=cache), iters=8)
        parts, total = [], 0.0
        for name, get in kinds.items():
            mods = [get(l) for l in layers]
            in_f = mods[0].weight.shape[1] * (32 // mods[0].bits if hasattr(mods[0], "bits") else 1)
            x = mx.random.normal((b, 1, in_f)).astype(mx.bfloat16)
            t = ms(lambda: [m(x) for m in mods])
            parts.append(f"{name} {t:.2f}")
            total += t
        x = mx.random.normal((b, 1, model.args.hidden_size)).astype(mx.bfloat16)
        t = ms(lambda: head(x))
        parts.append(f"head {t:.2f}")
        total += t
        q = mx.random.normal((b, heads, 1, hd)).astype(mx.bfloat16)
        k = [mx.random.normal((b, kv_heads, ctx, hd)).astype(mx.bfloat16) for _ in layers]
        v = [mx.random.normal((b, kv_heads, ctx, hd)).astype(mx.bfloat16) for _ in layers]
        pad = mx.where(mx.arange(ctx)[None, None, None, :] < mx.arange(b)[:, None, None, None], -1e9, 0.0).astype(mx.bfloat16)
        mx.eval(q, k, v, pad)
        sc = hd ** -0.5
        t0 = ms(lambda: [mx.fast.scaled_dot_product_attention(q, kk, vv, scale=sc) for kk, vv in zip(k, v)])
        t1 = ms(lambda: [mx.fast.scaled_dot_product_attention(q, kk, vv, scale=sc, mask=pad) for kk, vv in zip(k, v)])
        parts.append(f"sdpa {t0:.2f} (masked {t1:.2f})")
        total += t0
        print(f"rows {b:2d}: step {step:6.2f} ms ({b / step * 1e3:7.1f} tok/s); parts alone: {total:6.2f} ms = " + ", ".join(parts), flush=True)


if __name__ == "__main__":
    main()
