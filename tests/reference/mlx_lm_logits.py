"""Reference logits from Python mlx-lm for the architecture parity tests.
usage: mlx_lm_logits.py MODEL_DIR TOKEN_ID [TOKEN_ID ...]  -> JSON {"shape", "logits"}"""
import json
import sys

import mlx.core as mx

import mlx_compat  # noqa: F401  (before mlx_lm: see mlx_compat.py)
from mlx_lm import load


def main():
    model, _ = load(sys.argv[1])
    ids = mx.array([[int(t) for t in sys.argv[2:]]], dtype=mx.int32)
    logits = model(ids).astype(mx.float32)
    mx.eval(logits)
    print(json.dumps({"shape": list(logits.shape), "logits": logits.reshape(-1).tolist()}))


if __name__ == "__main__":
    main()
