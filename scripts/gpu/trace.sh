#!/usr/bin/env bash
# GPU timeline of a decode run on the GPU machine, Hearth and Python mlx-lm on the
# same model, through the CUPTI injection library kernel_trace.c (no nsys there).
# Run after `SYNTH_ONLY=1 KEEP_MODELS=1 bash scripts/gpu/run.sh MODEL`, which sets up
# MLX and writes /tmp/models/MODEL.
# usage: trace.sh MODEL [PROMPT] [GEN]   (env API=1 adds the host's driver/runtime calls)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
M=/tmp/models/$1; PROMPT=${2:-128}; GEN=${3:-512}
export PYTHONPATH=/tmp/site
export LD_LIBRARY_PATH=/tmp/site/mlx/lib:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
# CUPTI: the image's own (CUDA's extras or the nvidia-cuda-cupti wheel).
CUPTI=$(dirname "$(find /usr/local/cuda*/ /opt /usr/lib -name 'libcupti.so*' 2>/dev/null | head -1)")
INC=$(dirname "$(find /usr/local/cuda*/ /opt -name cupti.h 2>/dev/null | head -1)")
CUDA_INC=$(dirname "$(find /usr/local/cuda*/ -name cuda.h -path '*include*' 2>/dev/null | head -1)")
echo "cupti lib $CUPTI, headers $INC, cuda.h $CUDA_INC"
gcc -O2 -shared -fPIC -o /tmp/kernel_trace.so "$ROOT/scripts/gpu/kernel_trace.c" \
  -I"$CUDA_INC" -I"$INC" -L"$CUPTI" -lcupti -Wl,-rpath,"$CUPTI" || {
  # No CUPTI there: the library built here and CUPTI 13.0's wheel, if carried in .devcarry/b.
  echo "building failed: taking the carried kernel_trace.so"
  cp "$ROOT/.devcarry/b/kernel_trace.so" /tmp/ && xz -dc "$ROOT/.devcarry/b/libcupti.so.13.xz" > /tmp/libcupti.so.13
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/tmp
}
# Raw traces stay in /tmp as ktrace-*.txt (large); summaries go to $OUT.
O=${OUT:-/tmp}
trace() {  # label, command...
  local label=$1; shift
  KTRACE_OUT=/tmp/ktrace-$label.txt KTRACE_API=${API:-0} CUDA_INJECTION64_PATH=/tmp/kernel_trace.so "$@" \
    > "$O/run-$label.txt" 2>&1 || { echo "$label failed"; tail -5 "$O/run-$label.txt"; }
  grep -iE "tok/s|decode" "$O/run-$label.txt" | tail -3 || true
  python3 "$ROOT/scripts/gpu/kernel_trace.py" "/tmp/ktrace-$label.txt" 30 | tee "$O/trace-$label${API:+-api}.txt" || true
}
trace hearth /tmp/hearth bench --model "$M" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --reps 1
trace mlx-lm python3 "$ROOT/tests/reference/mlx_lm_bench.py" "$M" "$PROMPT" "$GEN" 1
