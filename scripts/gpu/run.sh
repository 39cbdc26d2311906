#!/usr/bin/env bash
# Runs on the GPU machine (device tool): assembles MLX's CUDA build under /tmp,
# writes synthetic 4-bit models at real shapes, and runs Hearth and Python mlx-lm
# side by side on them. usage: run.sh PRESET[,PRESET...] [PROMPTS] [GEN] [REPS] [ROUNDS]
# The pseudo-preset `moe-kernels` runs scripts/gpu/moe_decode_kernel.py instead
# (MLX's gather_qmm decode path against custom CUDA kernels, per layer), `qmm-rows`
# scripts/gpu/qmm_rows.py (MLX's quantized_matmul for 1-8 rows against Hearth's
# tensor-core kernel, at the 8B shapes; QMM_KW sets its warps per block), `moe-costs`
# scripts/gpu/moe_costs.py (a Qwen3-MoE layer's parts priced with MLX ops), `op-costs`
# scripts/gpu/op_costs.py (the host's encoding cost per op, by kind), `sdpa-costs`
# scripts/gpu/sdpa_costs.py (gpt-oss's decode attention with sinks and window masks), and
# `server-overhead` scripts/bench_server.sh (decode through the local server
# against in process), `unit-tests` the carried library test binary's GPU checks (.devcarry/b/hearth-tests.xz,
# from `cargo test --release --lib --no-run`: the fused MoE and gated delta kernels
# against the ops paths). KERNEL_OFF=1 adds a Hearth run with the fused MoE decode
# kernels turned off (HEARTH_MOE_KERNEL=0), DELTA_OFF=1 one with the gated delta
# kernel off (HEARTH_DELTA_KERNEL=0), FUSION_OFF=1 one with the fused decode kernels for
# attention's heads and residual norms off (HEARTH_DECODE_FUSION=0), ATTENTION_OFF=1 one
# with only the fused single-sequence decode attention off (HEARTH_DECODE_ATTENTION=0), for A/B. SYNTH_ONLY=1 only sets up and writes
# the models (kept under /tmp/models) for the commands that follow. STREAMS=1,8 adds a
# continuous-batching comparison with mlx-lm (scripts/bench_batch.sh); SINGLE=0 skips
# the single-stream one. STEP_PARTS=1 adds scripts/gpu/batch_step.py on the model (a
# batched decode step at 1-16 rows through mlx-lm, and its parts priced alone).
# AGENT=WORDS adds scripts/bench_agent.sh (20 turns through the Responses API after a
# system prompt of WORDS words; the openai SDK's wheels carried in .whl/) and, beside it,
# `hearth bench --multi-turn` at the session's length (a turn's new tokens prefilled
# on top of the cached history, in process: the time a turn's TTFT is held to); AGENT_ALSO="VAR=0" runs both
# again under those variables. KV_LONG=TOKENS
# adds the quantized KV cache at that prompt length: Hearth's --kv-bits 0, 8, 4 and
# mlx-lm's kv_bits, one after the other.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
S=/tmp/stage; SITE=/tmp/site
mkdir -p "$S"
cp -n "$ROOT"/.devcarry/*/* "$S"/ 2>/dev/null || true
if [ ! -f "$SITE/mlx/lib/libmlx.so" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$S"/mlx-*.whl "$S"/mlx_lm-*.whl
  mkdir -p "$SITE/mlx/lib"
  cat "$S"/libmlx.so.xz.part00 "$S"/libmlx.so.xz.part01 | xz -d > "$SITE/mlx/lib/libmlx.so"
  tar -C "$SITE" -xJf "$S/cuda_libs.tar.xz"
  tar -C "$SITE/mlx" -xJf "$S/include.tar.xz"
  # libmlx finds cuDNN, NCCL, cuBLAS… at $ORIGIN/../../nvidia: the torch venv's copies.
  NV=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')
  ln -sfn "$NV" "$SITE/nvidia"
fi
# The binary changes between runs; always take the one just carried.
xz -dc "$ROOT/.devcarry/b/hearth.xz" > /tmp/hearth 2>/dev/null || xz -dc "$S/hearth.xz" > /tmp/hearth
chmod +x /tmp/hearth
export PYTHONPATH=$SITE
if [ -d "$ROOT/.whl" ] && [ ! -d "$SITE/extra" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE/extra" "$ROOT"/.whl/*.whl
fi
[ -d "$SITE/extra" ] && export PYTHONPATH=$SITE:$SITE/extra
export LD_LIBRARY_PATH=$SITE/mlx/lib:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
export HEARTH=/tmp/hearth PYTHON=python3
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader
python3 -c 'import mlx.core as mx; print("mlx", mx.__version__, mx.default_device())'
IFS=, read -ra PRESETS <<< "$1"
PROMPTS=${2:-128,2048}; GEN=${3:-256}; REPS=${4:-3}
# Hearth once more on model $M with one of its CUDA kernels switched off (the
# env switch $1 set to 0), appended to the preset's bench file for A/B.
off_run() {
  extra_run "hearth with $1=0" "env $1=0 /tmp/hearth" "${@:2}"
}
# One more `bench` on model $M, appended to the preset's bench file under the
# label $1: $2 is the command before `bench` (split on spaces), the rest are
# extra bench arguments.
extra_run() {
  echo "# $1" | tee -a "${OUT:-/tmp}/bench-$p.txt"
  $2 bench --model "$M" --prompt-tokens "$PROMPTS" --gen-tokens "$GEN" --reps "$REPS" "${@:3}" 2>&1 | tee -a "${OUT:-/tmp}/bench-$p.txt"
}
for p in "${PRESETS[@]}"; do
  if [ "$p" = unit-tests ]; then
    xz -dc "$ROOT/.devcarry/b/hearth-tests.xz" > /tmp/hearth-tests && chmod +x /tmp/hearth-tests
    for f in fused cuda_kernel cuda_prefill cuda_decode compiled_activations; do
      /tmp/hearth-tests "$f" --nocapture 2>&1 | tee -a "${OUT:-/tmp}/unit-tests.txt" || true
    done
    continue
  fi
  if [ "$p" = server-overhead ]; then
    # Decode through `hearth serve` against in process, on the Llama-3.2-1B shape.
    M=/tmp/models/llama-3.2-1b
    [ -f "$M/config.json" ] || /tmp/hearth synth llama-3.2-1b "$M" --bits 4 --group-size 64 --dtype bf16
    bash "$ROOT/scripts/bench_server.sh" "$M" "${3:-256}" "${5:-3}" 2>&1 | tee "${OUT:-/tmp}/server-overhead.txt"
    continue
  fi
  if [ "$p" = moe-costs ]; then
    python3 "$ROOT/scripts/gpu/moe_costs.py" 2>&1 | tee "${OUT:-/tmp}/moe-costs.txt" || true
    continue
  fi
  if [ "$p" = op-costs ]; then
    python3 "$ROOT/scripts/gpu/op_costs.py" 2>&1 | tee -a "${OUT:-/tmp}/op-costs.txt" || true
    continue
  fi
  if [ "$p" = sdpa-costs ]; then
    python3 "$ROOT/scripts/gpu/sdpa_costs.py" 2>&1 | tee "${OUT:-/tmp}/sdpa-costs.txt" || true
    continue
  fi
  if [ "$p" = qmm-rows ]; then
    python3 "$ROOT/scripts/gpu/qmm_rows.py" ${QMM_KW:-8} 2>&1 | tee -a "${OUT:-/tmp}/qmm-rows.txt" || true
    continue
  fi
  if [ "$p" = moe-kernels ]; then
    python3 "$ROOT/scripts/gpu/moe_decode_kernel.py" 2>&1 | tee "${OUT:-/tmp}/moe-kernels.txt" || true
    continue
  fi
  M=/tmp/models/$p
  [ -f "$M/config.json" ] || /tmp/hearth synth "$p" "$M" --bits 4 --group-size 64 --dtype bf16
  # SYNTH_ONLY=1: set up and write the model, for commands that follow.
  [ "${SYNTH_ONLY:-0}" = 1 ] && continue
  echo "== $p"
  # SINGLE=0 skips the single-stream comparison (for STREAMS runs alone).
  if [ "${SINGLE:-1}" = 1 ]; then
    bash "$ROOT/scripts/bench_compare.sh" "$M" "$PROMPTS" "$GEN" "$REPS" "${5:-2}" 2>&1 | tee "${OUT:-/tmp}/bench-$p.txt"
  fi
  # STREAMS=1,8: continuous batching against mlx-lm's BatchGenerator (scripts/bench_batch.sh),
  # at the first prompt length and GEN tokens.
  if [ -n "${STREAMS:-}" ]; then
    bash "$ROOT/scripts/bench_batch.sh" "$M" "${PROMPTS%%,*}" "$GEN" "$STREAMS" "$REPS" 2>&1 | tee "${OUT:-/tmp}/batch-$p.txt"
  fi
  if [ -n "${AGENT:-}" ]; then
    HEARTH=/tmp/hearth PYTHON=python3 bash "$ROOT/scripts/bench_agent.sh" "$M" 20 "$AGENT" "${AGENT_GEN:-32}" 2>&1 | tee "${OUT:-/tmp}/agent-$p.txt"
    # A turn's new tokens prefilled on top of the cached history, in process:
    # the multi-turn case's second turn at the session's first-turn length.
    FIRST=$(sed -n 's/.*"turn": 1, "input": \([0-9]*\).*/\1/p' "${OUT:-/tmp}/agent-$p.txt")
    /tmp/hearth bench --model "$M" --prompt-tokens "${FIRST:-6581}" --gen-tokens 1 --reps 3 --multi-turn 2>&1 | tee -a "${OUT:-/tmp}/agent-$p.txt"
    # AGENT_ALSO="VAR=VALUE ...": the session and the in-process turn again
    # under those variables (MLX_CUDA_USE_CUDNN_SDPA=0: MLX's cuDNN attention
    # off; HEARTH_SHORT_PREFILL_OPS=0: a few queries through MLX's SDPA again), for A/B.
    if [ -n "${AGENT_ALSO:-}" ]; then
      echo "# $AGENT_ALSO" | tee -a "${OUT:-/tmp}/agent-$p.txt"
      env $AGENT_ALSO HEARTH=/tmp/hearth PYTHON=python3 bash "$ROOT/scripts/bench_agent.sh" "$M" 20 "$AGENT" "${AGENT_GEN:-32}" 2>&1 | tee -a "${OUT:-/tmp}/agent-$p.txt"
      env $AGENT_ALSO /tmp/hearth bench --model "$M" --prompt-tokens "${FIRST:-6581}" --gen-tokens 1 --reps 3 --multi-turn 2>&1 | tee -a "${OUT:-/tmp}/agent-$p.txt"
    fi
  fi
  if [ -n "${KV_LONG:-}" ]; then
    for b in 0 8 4; do
      # One failing (a shape a kernel lacks) does not stop the others.
      /tmp/hearth bench --model "$M" --prompt-tokens "$KV_LONG" --gen-tokens "$GEN" --reps 1 --kv-bits $b 2>&1 | tee -a "${OUT:-/tmp}/kv-$p.txt" || true
      KV_BITS=$b python3 "$ROOT/tests/reference/mlx_lm_bench.py" "$M" "$KV_LONG" "$GEN" 1 2>&1 | tee -a "${OUT:-/tmp}/kv-$p.txt" || true
    done
  fi
  if [ "${STEP_PARTS:-0}" = 1 ]; then
    python3 "$ROOT/scripts/gpu/batch_step.py" "$M" "${PROMPTS%%,*}" 2>&1 | tee "${OUT:-/tmp}/step-parts-$p.txt" || true
  fi
  if [ "${KERNEL_OFF:-0}" = 1 ]; then off_run HEARTH_MOE_KERNEL; fi
  if [ "${FUSION_OFF:-0}" = 1 ]; then off_run HEARTH_DECODE_FUSION; fi
  if [ "${ATTENTION_OFF:-0}" = 1 ]; then off_run HEARTH_DECODE_ATTENTION; fi
  # ALSO_BIN=path: another Hearth binary (an earlier build) on the same model, for A/B.
  if [ -n "${ALSO_BIN:-}" ]; then extra_run "$ALSO_BIN" "$ALSO_BIN"; fi
  if [ "${DELTA_OFF:-0}" = 1 ]; then off_run HEARTH_DELTA_KERNEL --multi-turn; fi
  # Disk holds one large synthetic model at a time.
  [ "${KEEP_MODELS:-0}" = 1 ] || rm -rf "$M"
done
