#!/usr/bin/env bash
# The long soak (a benchmark beside the test suite): `hearth serve` on SmolLM2
# under SOAK_REQUESTS mixed requests (default 1000) from SOAK_CLIENTS clients
# (default 8) — chat plain and streamed, forced tool calls, JSON-schema output,
# Anthropic and Ollama chats, cancelled streams, vanishing clients — then the
# figures (errors, resident and MLX memory over the run, open files, threads)
# as one SOAK {...} line; docs/RELIABILITY.md keeps them. The short run (200
# requests, 4 clients) is tests/soak.rs in the test suite.
# usage: scripts/soak.sh   (after scripts/setup.sh; SOAK_SAMPLES=FILE keeps every memory sample as CSV)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export SOAK_REQUESTS=${SOAK_REQUESTS:-1000} SOAK_CLIENTS=${SOAK_CLIENTS:-8}
cargo test --release --locked --test soak long_soak -- --ignored --nocapture 2>&1 | grep -E "SOAK \{|panicked|test result|unexpected|grew|leaked"
SOAK_LOAD_CYCLES=${SOAK_LOAD_CYCLES:-200} cargo test --release --locked --test soak load_unload -- --nocapture 2>&1 | grep -E "LOAD_CYCLES|panicked|test result|grew|drifted|left"
