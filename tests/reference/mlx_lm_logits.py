"""Reference logits from Python mlx-lm for the architecture parity tests.
usage: mlx_lm_logits.py MODEL_DIR TOKEN_ID [TOKEN_ID ...]  -> JSON {"shape", "logits"}"""
import json
import sys

import mlx.core as mx

# mlx-lm 0.32.2's quantized MoE layers pass global_scale= to mx.gather_qmm,
# which libmlx 0.32.2 lacks: drop it when it is None.
_gather_qmm = mx.gather_qmm


def _gather_qmm_compat(*args, global_scale=None, **kwargs):
    if global_scale is not None:
        kwargs["global_scale"] = global_scale
    return _gather_qmm(*args, **kwargs)


mx.gather_qmm = _gather_qmm_compat
from mlx_lm import load


def main():
    model, _ = load(sys.argv[1])
    ids = mx.array([[int(t) for t in sys.argv[2:]]], dtype=mx.int32)
    logits = model(ids).astype(mx.float32)
    mx.eval(logits)
    print(json.dumps({"shape": list(logits.shape), "logits": logits.reshape(-1).tolist()}))


if __name__ == "__main__":
    main()
