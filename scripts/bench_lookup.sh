#!/usr/bin/env bash
# Prompt lookup (speculative decoding from the prompt) against plain decoding,
# interleaved A/B in one run on the same model: a copy task with one change,
# a code edit, and free text sampled at temperature 1 (little to look up,
# where the lookup must turn itself off). Prints decode tok/s, the ratio, how
# many proposed tokens were kept, and whether greedy replies are identical.
# usage: scripts/bench_lookup.sh [MODEL=SmolLM2 GGUF] [REPS=3] [GEN=200]
# Env: HEARTH (binary, default target/release/hearth).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=${1:-$ROOT/.deps/models/SmolLM2-135M-Instruct.Q4_1.gguf}; R=${2:-3}; G=${3:-200}
HEARTH=${HEARTH:-$ROOT/target/release/hearth}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
PASSAGE="The river wound slowly through the valley, past the old mill and the stone bridge where children fished in summer. In autumn the river ran high and brown, carrying leaves down from the hills, and the miller would watch it from his window, counting the days until the first frost. When winter came the river froze at its edges, and the village gathered on the bridge to watch the ice."
CODE='def area(shapes):
    total = 0
    for shape in shapes:
        if shape.kind == "circle":
            total += 3.14159 * shape.r * shape.r
        elif shape.kind == "square":
            total += shape.side * shape.side
        elif shape.kind == "rect":
            total += shape.w * shape.h
    return total'
tasks=(copy edit free)
prompt() {
  case $1 in
    copy) printf 'Repeat the following passage exactly, but replace the word "river" with "stream".\n\n%s' "$PASSAGE" ;;
    edit) printf 'Rewrite this Python function with the variable "total" renamed to "acc". Output only the code.\n\n%s' "$CODE" ;;
    free) printf 'Write a short story about a lighthouse keeper who finds a message in a bottle.' ;;
  esac
}
sampling() { [ "$1" = free ] && echo "--temperature 1 --top-k 0 --top-p 1 --min-p 0 --seed 11" || echo "--temperature 0"; }
for rep in $(seq 1 "$R"); do
  for t in "${tasks[@]}"; do
    for k in 0 8; do
      # shellcheck disable=SC2046
      HEARTH_PROMPT_LOOKUP=$k "$HEARTH" generate -m "$MODEL" $(sampling "$t") --max-tokens "$G" --stats "$(prompt "$t")" \
        > "$W/$t-$k-$rep.txt" 2> "$W/$t-$k-$rep.err"
      tail -n 1 "$W/$t-$k-$rep.err" | sed "s/^{/{\"task\":\"$t\",\"lookup\":$k,\"rep\":$rep,/" >> "$W/rows.jsonl"
    done
  done
done
python3 - "$W" <<'PY'
import json, statistics, sys, filecmp, os
w = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(w, "rows.jsonl"))]
print("task   plain tok/s   lookup tok/s   ratio   kept/proposed   tokens   same reply")
for t in ["copy", "edit", "free"]:
    med = lambda k, key: statistics.median(r[key] for r in rows if r["task"] == t and r["lookup"] == k)
    a, b = med(0, "decode_tps"), med(8, "decode_tps")
    kept, drafted = med(8, "accepted_draft_tokens"), med(8, "draft_tokens")
    reps = sorted({r["rep"] for r in rows})
    same = all(filecmp.cmp(f"{w}/{t}-0-{r}.txt", f"{w}/{t}-8-{r}.txt", shallow=False) for r in reps)
    print(f"{t:5s}  {a:11.2f}  {b:13.2f}  {b/a:5.2f}x  {kept:6.0f}/{drafted:<6.0f}  {med(8, 'generated_tokens'):6.0f}   {same if t != 'free' else '(sampled)'}")
PY
