#!/usr/bin/env bash
# Builds the Linux tarball, unpacks it in a fresh directory, and checks that it
# answers with the default model: from the command line, and in the real window
# under Xvfb (the reply is read back from the saved conversation).
set -euo pipefail
trap 'echo "check_tarball.sh: line $LINENO failed (exit $?)" >&2' ERR
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK=$(mktemp -d)
trap 'kill ${APP:-} ${XVFB:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
TARBALL=$(bash "$ROOT/bundle/build.sh" --linux-tarball --out "$WORK/out" | tail -1)
mkdir "$WORK/fresh" && tar -C "$WORK/fresh" -xzf "$TARBALL"
APPDIR=$(ls -d "$WORK"/fresh/hearth-*)
export HEARTH_HOME="$WORK/home"
ANSWER=$("$APPDIR/hearth" generate --temperature 0 --max-tokens 40 "What is the capital of France?")
echo "cli: $ANSWER"
grep -q Paris <<< "$ANSWER"
command -v Xvfb >/dev/null || { echo "Xvfb missing" >&2; exit 1; }
D=:$((70 + RANDOM % 20))
Xvfb "$D" -screen 0 1100x720x24 >/dev/null 2>&1 & XVFB=$!
sleep 1
# Greedy, as the command line above: a sampled reply may be empty or wander.
mkdir -p "$HEARTH_HOME" && echo '{"sampling": {"temperature": 0.0}}' > "$HEARTH_HOME/settings.json"
DISPLAY=$D "$APPDIR/hearth" app --demo-prompt "What is the capital of France?" >/dev/null 2>&1 & APP=$!
for _ in $(seq 1 120); do
  grep -qs decode_tps "$HEARTH_HOME"/conversations/*.json && break
  kill -0 $APP 2>/dev/null || { echo "the app exited" >&2; exit 1; }
  sleep 1
done
REPLY=$(python3 -c 'import json,glob; c=json.load(open(glob.glob("'"$HEARTH_HOME"'/conversations/*.json")[0])); print(c["messages"][-1]["content"])')
echo "window: $REPLY"
grep -q Paris <<< "$REPLY"
echo "tarball OK"
