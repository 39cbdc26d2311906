#!/usr/bin/env bash
# Side-by-side benchmark: Hearth and Python mlx-lm on the same model folder and
# the same libmlx, interleaved A/B/A/B in one run, then the ratios.
# usage: scripts/bench_compare.sh MODEL_DIR [PROMPT_TOKENS=128,2048] [GEN=256] [REPS=3] [ROUNDS=2]
# Env: HEARTH (binary, default target/release/hearth), PYTHON (default .deps/venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=$1; P=${2:-128,2048}; G=${3:-256}; R=${4:-3}; ROUNDS=${5:-2}
HEARTH=${HEARTH:-$ROOT/target/release/hearth}
PYTHON=${PYTHON:-$ROOT/.deps/venv/bin/python}
OUT=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  echo "# round $round: hearth" >&2
  "$HEARTH" bench --model "$MODEL" --prompt-tokens "$P" --gen-tokens "$G" --reps "$R" --multi-turn | tee -a "$OUT"
  echo "# round $round: mlx-lm" >&2
  "$PYTHON" "$ROOT/tests/reference/mlx_lm_bench.py" "$MODEL" "$P" "$G" "$R" | tee -a "$OUT"
done
"$PYTHON" - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(engine, n, key):
    v = [r[key] for r in rows if r["engine"] == engine and r.get("prompt_tokens") == n and r.get("case", "single") == "single"]
    return statistics.median(v) if v else float("nan")
print("\nprompt  decode tok/s (hearth / mlx-lm = ratio)   TTFT s (hearth / mlx-lm = ratio)   peak MB (hearth / mlx-lm)")
for n in sorted({r["prompt_tokens"] for r in rows if r["engine"] == "mlx-lm"}):
    hd, md = med("hearth", n, "decode_tps"), med("mlx-lm", n, "decode_tps")
    ht, mt = med("hearth", n, "ttft_s"), med("mlx-lm", n, "ttft_s")
    hp, mp = med("hearth", n, "peak_memory_mb"), med("mlx-lm", n, "peak_memory_mb")
    print(f"{n:6d}  {hd:8.2f} / {md:8.2f} = {hd/md:5.2f}x          {ht:7.3f} / {mt:7.3f} = {ht/mt:5.2f}x          {hp:8.0f} / {mp:8.0f}")
mt = [r for r in rows if r.get("case") == "multi_turn"]
if mt:
    r = mt[-1]
    print(f"multi-turn: second-turn TTFT {r['second_turn_ttft_s']:.3f} s vs cold {r['cold_ttft_s']:.3f} s "
          f"for {r['total_prompt_tokens']} tokens = {r['cold_ttft_s']/r['second_turn_ttft_s']:.1f}x faster")
PY
