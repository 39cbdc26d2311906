#!/usr/bin/env bash
# Starts the real Hearth window under Xvfb, sends a question to the default
# model, waits for the streamed answer and saves a PNG (default assets/screenshot.png).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/assets/screenshot.png}"
cd "$ROOT"
bash scripts/setup.sh
if ! command -v import >/dev/null || ! command -v Xvfb >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends imagemagick xvfb libgl1-mesa-dri >/dev/null
fi
cargo build --release
HOME_DIR=$(mktemp -d)
export HEARTH_HOME="$HOME_DIR"
./target/release/hearth models import .deps/models/SmolLM2-135M-Instruct.Q4_1.gguf
DISPLAY_NUM=:$((90 + RANDOM % 9))
Xvfb "$DISPLAY_NUM" -screen 0 1100x720x24 >/dev/null 2>&1 &
XVFB=$!
trap 'kill $APP $XVFB 2>/dev/null || true; rm -rf "$HOME_DIR"' EXIT
sleep 1
DISPLAY="$DISPLAY_NUM" ./target/release/hearth app \
  --demo-prompt "What is the capital of France? Answer, then give two facts about it as a Markdown list." &
APP=$!
# Wait until the reply is saved with its stats (the conversation file gets "decode_tps").
for _ in $(seq 1 120); do
  if grep -qs decode_tps "$HOME_DIR"/conversations/*.json; then break; fi
  sleep 1
done
sleep 1
DISPLAY="$DISPLAY_NUM" import -window root "$OUT"
echo "saved $OUT"
