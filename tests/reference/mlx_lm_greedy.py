"""Reference for the parity test: greedy token ids from Python mlx-lm.

usage: mlx_lm_greedy.py MODEL_DIR N PROMPT_ID [PROMPT_ID ...]
Prints a JSON list of the first N generated token ids (EOS not special-cased).
"""
import json
import sys

import mlx.core as mx

import mlx_compat  # noqa: F401  (before mlx_lm: see mlx_compat.py)
from mlx_lm import load
from mlx_lm.generate import generate_step


def main():
    model_dir, n = sys.argv[1], int(sys.argv[2])
    prompt = mx.array([int(t) for t in sys.argv[3:]], dtype=mx.int32)
    model, _ = load(model_dir)
    out = []
    for (tok, _), _ in zip(generate_step(prompt, model, max_tokens=n), range(n)):
        out.append(int(tok))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
