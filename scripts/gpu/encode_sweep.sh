#!/usr/bin/env bash
# Decode speed under MLX's CUDA encoding settings, Hearth and mlx-lm on the same
# model: MLX records kernels into CUDA graphs and commits one every
# MLX_MAX_OPS_PER_BUFFER ops (default 20), and async_eval blocks once 10
# commits are in flight, so per-op host cost sets the pace of decode.
# Run after `SYNTH_ONLY=1 KEEP_MODELS=1 bash scripts/gpu/run.sh MODEL`.
# usage: encode_sweep.sh MODEL_DIR [PROMPT=128] [GEN=128] [REPS=3] [CONFIGS...]
# (a config is a space-separated env list, "default" for none)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
M=$1; P=${2:-128}; G=${3:-128}; R=${4:-3}; shift $(( $# < 4 ? $# : 4 ))
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=("default" "MLX_USE_CUDA_GRAPHS=0" "MLX_MAX_OPS_PER_BUFFER=60" "MLX_MAX_OPS_PER_BUFFER=200")
for c in "${CONFIGS[@]}"; do
  e=(); [ "$c" = default ] || read -ra e <<< "$c"
  echo "# hearth, $c"
  env "${e[@]}" "${HEARTH:-/tmp/hearth}" bench --model "$M" --prompt-tokens "$P" --gen-tokens "$G" --reps "$R" 2>&1 | grep '^{'
  echo "# mlx-lm, $c"
  env "${e[@]}" "${PYTHON:-python3}" "$ROOT/tests/reference/mlx_lm_bench.py" "$M" "$P" "$G" "$R" 2>&1 | grep '^{'
done
