#!/usr/bin/env bash
# Sets everything up (idempotent), installs the default model and starts Hearth.
# Extra arguments go to the hearth binary (e.g. `scripts/run.sh chat`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
./target/release/hearth models import --if-missing .deps/models/SmolLM2-135M-Instruct.Q4_1.gguf
exec ./target/release/hearth "$@"
