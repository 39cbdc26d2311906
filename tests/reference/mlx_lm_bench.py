"""Python mlx-lm side of the side-by-side benchmark; prints JSON lines shaped like
`hearth bench`. usage: mlx_lm_bench.py MODEL_DIR PROMPT_TOKENS(csv) GEN_TOKENS REPS
KV_BITS=8 or 4 in the environment: mlx-lm's quantized KV cache from the first token
(`kv_bits`, group 64), as `hearth bench --kv-bits` quantizes it."""
import json
import os
import statistics
import sys
import time

import mlx.core as mx

import mlx_compat  # noqa: F401  (before mlx_lm: see mlx_compat.py)
from mlx_lm import load, stream_generate


def main():
    model_dir = sys.argv[1]
    prompt_lens = [int(x) for x in sys.argv[2].split(",")]
    gen, reps = int(sys.argv[3]), int(sys.argv[4])
    t = time.perf_counter()
    model, tokenizer, config = load(model_dir, return_config=True)
    load_s = time.perf_counter() - t
    tokenizer._eos_token_ids = set()  # generate exactly `gen` tokens, as hearth bench does
    vocab = min(config["vocab_size"], len(tokenizer.vocab) if hasattr(tokenizer, "vocab") else config["vocab_size"])
    kv_bits = int(os.environ.get("KV_BITS", "0")) or None
    kv = {"kv_bits": kv_bits, "kv_group_size": 64, "quantized_kv_start": 0} if kv_bits else {}
    mx.random.seed(0)
    for n in prompt_lens:
        prompt = mx.random.randint(0, vocab, (n,)).tolist()
        pre, dec, ttft = [], [], []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            first = None
            for resp in stream_generate(model, tokenizer, prompt, max_tokens=gen, **kv):
                if first is None:
                    first = time.perf_counter() - t0
            if r > 0:
                pre.append(resp.prompt_tps)
                dec.append(resp.generation_tps)
                ttft.append(first)
        print(json.dumps({
            "engine": "mlx-lm",
            "kv_bits": kv_bits or 0,
            "prompt_tokens": n,
            "gen_tokens": gen,
            "reps": reps,
            "prefill_tps": statistics.median(pre),
            "prefill_tps_range": [min(pre), max(pre)],
            "decode_tps": statistics.median(dec),
            "decode_tps_range": [min(dec), max(dec)],
            "ttft_s": statistics.median(ttft),
            "ttft_s_range": [min(ttft), max(ttft)],
            "load_s": load_s,
            "peak_memory_mb": mx.get_peak_memory() / 1e6,
        }), flush=True)


if __name__ == "__main__":
    main()
