#!/usr/bin/env bash
# The local server's overhead: the same model's decode speed through
# `hearth serve` (/v1/completions with ignore_eos, whole and streamed; the
# decode is the time of a GEN-token reply less that of a one-token reply to
# the same, cached, prompt) and through `hearth bench` (in process),
# interleaved, then the ratios.
# usage: scripts/bench_server.sh MODEL [GEN=256] [ROUNDS=3]
# Env: HEARTH (binary, default target/release/hearth), PYTHON (default .deps/venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=$1; G=${2:-256}; ROUNDS=${3:-3}
HEARTH=${HEARTH:-$ROOT/target/release/hearth}
PYTHON=${PYTHON:-$ROOT/.deps/venv/bin/python}
OUT=$(mktemp)
HOME_DIR=$(mktemp -d)
# Plain decoding on both sides (`hearth bench` turns prompt lookup off).
HEARTH_PROMPT_LOOKUP=0 HEARTH_HOME="$HOME_DIR" "$HEARTH" serve --port 0 --model "$MODEL" > "$HOME_DIR/serve.out" 2> "$HOME_DIR/serve.err" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; rm -rf "$HOME_DIR"' EXIT
for _ in $(seq 1 100); do grep -q listening "$HOME_DIR/serve.out" && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$HOME_DIR/serve.out")
for round in $(seq 1 "$ROUNDS"); do
  echo "# round $round: in process" >&2
  "$HEARTH" bench --model "$MODEL" --prompt-tokens 128 --gen-tokens "$G" --reps 3 | tee -a "$OUT"
  echo "# round $round: through the server" >&2
  "$PYTHON" - "$URL" "$G" <<'PY' | tee -a "$OUT"
import json, sys, time, urllib.request
url, gen = sys.argv[1], int(sys.argv[2])
# About 128 tokens of prompt, as the in-process case.
prompt = "The history of the city is long and full of stories. " * 11
def complete(n, stream):
    body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True, "stream": stream,
                       "stream_options": {"include_usage": True}} if stream else
                      {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        for line in r:
            pass
    return time.perf_counter() - t0
complete(gen, True)  # warm-up
for _ in range(3):
    # The prompt is the same each time: the prompt cache answers it at once,
    # so the difference between a long and a one-token reply is the decode.
    one, whole, streamed = complete(1, False), complete(gen, False), complete(gen, True)
    print(json.dumps({"engine": "server", "prompt_tokens": 128, "generated": gen,
                      "decode_tps": (gen - 1) / (whole - one), "streamed_decode_tps": (gen - 1) / (streamed - one)}))
PY
done
"$PYTHON" - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
server = [r for r in rows if r.get("engine") == "server"]
inproc = [r for r in rows if r.get("engine") == "hearth"]
h = statistics.median(r["decode_tps"] for r in inproc)
for key, what in [("decode_tps", "whole"), ("streamed_decode_tps", "streamed (SSE)")]:
    s = statistics.median(r[key] for r in server)
    print(f"decode tok/s through the server, {what}: {s:.2f} / in process {h:.2f} = {s/h:.3f}x "
          f"({len(server)} server runs, {len(inproc)} in-process medians; 128-token prompt)")
PY
