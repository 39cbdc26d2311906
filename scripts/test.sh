#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the whole test suite on the real model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# The macOS build, type-checked and linted for aarch64-apple-darwin (no Mac needed).
bash scripts/check_macos.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
# MLX work is serialized: tests share one model and the machine's cores.
cargo test --release -- --test-threads=1
