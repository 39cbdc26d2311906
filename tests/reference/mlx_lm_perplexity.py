"""Reference perplexity from Python mlx-lm's own `perplexity.eval_ppl` over
the same token windows Hearth reads.
usage: mlx_lm_perplexity.py MODEL_DIR WINDOW TOKENS_JSON  -> JSON {"perplexity", "standard_error", "tokens"}
TOKENS_JSON holds the text's token ids; the first whole windows of WINDOW
tokens are evaluated, as `hearth eval perplexity --windows N` does."""
import contextlib
import json
import sys

import mlx.core as mx

import mlx_compat  # noqa: F401  (before mlx_lm: see mlx_compat.py)
from mlx_lm import load
from mlx_lm.perplexity import eval_ppl


def main():
    model, _ = load(sys.argv[1])
    window = int(sys.argv[2])
    ids = json.load(open(sys.argv[3]))
    n = len(ids) // window
    data = mx.array(ids[: n * window], dtype=mx.int32).reshape(n, window)
    # eval_ppl prints its progress on stdout; the answer is the only line there.
    with contextlib.redirect_stdout(sys.stderr):
        ppl, se = eval_ppl(model, data, batch_size=4)
    print(json.dumps({"perplexity": ppl, "standard_error": se, "tokens": n * (window - 1)}))


if __name__ == "__main__":
    main()
