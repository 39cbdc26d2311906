#!/usr/bin/env bash
# Poor man's sampling profiler for the host side of decode on the GPU machine
# (no perf or nsys there; cuda-gdb is): runs `hearth bench` on model $1 with a
# long generation and takes $2 stack samples of all its threads with
# cuda-gdb, one every $3 seconds after $4 seconds of warm-up (prefill).
# usage: host_stacks.sh MODEL [SAMPLES] [EVERY_S] [WARMUP_S]  (after run.sh set up /tmp/hearth)
set -uo pipefail
M=$1; N=${2:-20}; EVERY=${3:-0.5}; WARM=${4:-8}
GDB=/usr/local/cuda/bin/cuda-gdb
/tmp/hearth bench --model "$M" --prompt-tokens 2048 --gen-tokens 4000 --reps 1 >/dev/null 2>&1 &
PID=$!
sleep "$WARM"
for i in $(seq 1 "$N"); do
  echo "=== sample $i"
  timeout 20 "$GDB" -p "$PID" -batch -nx -ex "set pagination off" -ex "thread apply all bt 40" 2>/dev/null | grep -E "^#|^Thread" || true
  sleep "$EVERY"
done
kill "$PID" 2>/dev/null
