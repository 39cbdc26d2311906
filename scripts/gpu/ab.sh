#!/usr/bin/env bash
# A/B of two Hearth binaries on the GPU machine, alternated on one model so the
# host's drift hits both alike: `hearth bench` with A, B, A, B, ... (ROUNDS
# times each), decode tok/s and host ms per step printed side by side.
# usage: ab.sh MODEL BIN_A BIN_B [PROMPTS] [GEN] [REPS] [ROUNDS]
set -uo pipefail
M=$1; A=$2; B=$3; PROMPTS=${4:-128,2048}; GEN=${5:-128}; REPS=${6:-3}; ROUNDS=${7:-2}
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$A" "$B"; do
    "$bin" bench --model "$M" --prompt-tokens "$PROMPTS" --gen-tokens "$GEN" --reps "$REPS" 2>/dev/null |
      python3 "$(dirname "${BASH_SOURCE[0]}")/bench_row.py" "round $r $(basename "$bin")"
  done
done
