#!/usr/bin/env bash
# Continuous batching side by side: `hearth bench --streams` and Python
# mlx-lm's BatchGenerator (tests/reference/mlx_lm_batch.py) on the same model
# folder, same prompt length, tokens and stream counts, one after the other
# in one run; prints both engines' JSON lines and the ratios.
# usage: bench_batch.sh MODEL_DIR [PROMPT] [GEN] [STREAMS] [REPS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
M=$1; P=${2:-64}; G=${3:-64}; S=${4:-1,4,8}; R=${5:-2}
HEARTH=${HEARTH:-$ROOT/target/release/hearth}
PYTHON=${PYTHON:-$ROOT/.deps/venv/bin/python}
T=$(mktemp -d)
"$HEARTH" bench --model "$M" --prompt-tokens "$P" --gen-tokens "$G" --reps "$R" --streams "$S" | grep '"streams"' | tee "$T/hearth.jsonl"
"$PYTHON" "$ROOT/tests/reference/mlx_lm_batch.py" "$M" "$P" "$G" "$S" "$R" | tee "$T/mlx.jsonl"
"$PYTHON" - "$T/hearth.jsonl" "$T/mlx.jsonl" <<'PY'
import json, sys
h = {j["streams"]: j for j in map(json.loads, open(sys.argv[1]))}
m = {j["streams"]: j for j in map(json.loads, open(sys.argv[2]))}
one = h.get(1, {}).get("aggregate_decode_tps")
for s in sorted(h):
    a, b = h[s], m.get(s, {})
    ratio = lambda k: a[k] / b[k] if b.get(k) else float("nan")
    scale = a["aggregate_decode_tps"] / one if one else float("nan")
    print(f"streams {s}: hearth {a['aggregate_decode_tps']:.1f} tok/s ({scale:.2f}x one stream), mlx-lm {b.get('aggregate_decode_tps', float('nan')):.1f}"
          f" -> {ratio('aggregate_decode_tps'):.2f}x; wall {a['wall_tps']:.1f} vs {b.get('wall_tps', float('nan')):.1f} -> {ratio('wall_tps'):.2f}x;"
          f" peak {a['peak_memory_mb']:.0f} vs {b.get('peak_memory_mb', float('nan')):.0f} MB")
PY
rm -rf "$T"
