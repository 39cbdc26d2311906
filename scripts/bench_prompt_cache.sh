#!/usr/bin/env bash
# The prompt cache on disk against computing the prompt again, each run its
# own process (a restart between turns): a long raw prompt answered with no
# cache (cold), then saved (turn 1), then a follow-up restored from disk
# (turn 2, only its new tokens prefilled) and one more (turn 3). Prints each
# run's stats line (ttft_s, reused and restored tokens, bytes written), then
# the TTFT ratio cold / restored and the bytes each turn wrote.
# usage: scripts/bench_prompt_cache.sh MODEL [LINES=200]   (200 lines ≈ 4,300 SmolLM2 tokens)
# Env: HEARTH (binary, default target/release/hearth).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=$1; LINES=${2:-200}
HEARTH=${HEARTH:-$ROOT/target/release/hearth}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
P=$(for i in $(seq 1 "$LINES"); do echo "Line $i: the tide rises and falls on the shore of island $i."; done)
Q1="$P
Which island is named last?"
Q2="$Q1 And which is named first?"
run() { "$HEARTH" generate --raw --temperature 0 --max-tokens 8 --stats --model "$MODEL" "$@" 2>&1 >/dev/null | grep '^{'; }
cold=$(run "$Q1")
t1=$(run --prompt-cache "$W/c" "$P")
t2=$(run --prompt-cache "$W/c" "$Q1")
t3=$(run --prompt-cache "$W/c" "$Q2")
for l in "$cold" "$t1" "$t2" "$t3"; do echo "$l"; done
python3 - "$cold" "$t1" "$t2" "$t3" <<'PY'
import json, sys
cold, t1, t2, t3 = (json.loads(a) for a in sys.argv[1:])
print(json.dumps({
    "prompt_tokens": cold["prompt_tokens"],
    "cold_ttft_s": round(cold["ttft_s"], 3),
    "restored_ttft_s": round(t2["ttft_s"], 3),
    "ratio": round(cold["ttft_s"] / t2["ttft_s"], 1),
    "restored_tokens": t2["prompt_file_tokens"],
    "bytes_written": {"turn1": t1["prompt_file_written"], "turn2": t2["prompt_file_written"], "turn3": t3["prompt_file_written"]},
    "new_tokens": {"turn2": t2["prefilled_tokens"], "turn3": t3["prefilled_tokens"]},
}))
PY
