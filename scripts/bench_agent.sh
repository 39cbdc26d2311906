#!/usr/bin/env bash
# An agent session through the Responses API: a long system prompt
# (`instructions`), then TURNS turns continued by `previous_response_id`,
# each adding a short user message. Per turn: input tokens, the tokens the
# prefix cache held, the new ones, and the time to the first text (TTFT).
# At the end the last turn's whole conversation once more, sent as items
# with the system prompt changed at its start (so nothing of it is cached):
# what that turn costs when the history is prefilled again. The claim
# checked: each turn prefills only its new tokens, so its TTFT stays near the
# first turn's instead of growing with the history.
# usage: scripts/bench_agent.sh MODEL [TURNS=20] [SYSTEM_WORDS=1500] [GEN=32]   (AGAIN=1: a second
# session of the same shapes, after the first)
# Then the server's log line for each request (its time split).
# Env: HEARTH (binary, default target/release/hearth), PYTHON (default .deps/venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=$1; TURNS=${2:-20}; WORDS=${3:-1500}; G=${4:-32}
HEARTH=${HEARTH:-$ROOT/target/release/hearth}
PYTHON=${PYTHON:-$ROOT/.deps/venv/bin/python}
W=$(mktemp -d)
HEARTH_HOME="$W" "$HEARTH" serve --port 0 --model "$MODEL" > "$W/serve.out" 2> "$W/serve.err" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 1 300); do grep -q listening "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$W/serve.out")
"$PYTHON" - "$URL" "$TURNS" "$WORDS" "$G" <<'PY'
import json, os, sys, time, openai
url, turns, words, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
system = " ".join(f"Rule {i}: keep every answer short and name the file you change." if i % 10 == 0 else "word" for i in range(words))
c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
model = c.models.list().data[0].id
def turn(**kw):
    t0 = time.perf_counter(); ttft = None
    r, last = None, None
    with c.responses.stream(model=model, temperature=0, max_output_tokens=gen, **kw) as s:
        for e in s:
            if ttft is None and e.type in ("response.output_text.delta", "response.reasoning_text.delta", "response.output_item.added"):
                ttft = time.perf_counter() - t0
            # A reply cut by max_output_tokens ends "incomplete" (random weights never stop).
            if e.type in ("response.completed", "response.incomplete"):
                r = e.response
            last = e
    if r is None:
        sys.exit(f"the stream ended without a response: {last}")
    u = r.usage
    # total_s: the whole request; with GEN=1 it is the time to the first token even
    # where no text shows (random weights write bytes that decode to nothing).
    return r, {"input": u.input_tokens, "cached": u.input_tokens_details.cached_tokens,
               "new": u.input_tokens - u.input_tokens_details.cached_tokens, "ttft_s": round(ttft or 0.0, 4),
               "total_s": round(time.perf_counter() - t0, 4)}
def session(system, label=""):
    prev, items, rows = None, [], []
    for i in range(turns):
        q = f"Step {i}: what is {i} plus {i}?"
        r, row = turn(instructions=system, input=q, previous_response_id=prev)
        prev = r.id
        items += [{"role": "user", "content": q}, {"role": "assistant", "content": r.output_text}]
        rows.append(dict(turn=f"{label}{i + 1}" if label else i + 1, **row)); print(json.dumps(rows[-1]), flush=True)
    return items, rows
items, rows = session(system)
# AGAIN=1: a second session whose system prompt differs in one letter a word
# (the same token counts where the tokenizer splits both alike): its turns
# run the very shapes the first ran, so what the first paid for new shapes
# (kernels a GPU backend builds on first use) shows as the difference.
if os.environ.get("AGAIN") == "1":
    session(system.replace("word", "wore"), label="again ")
# The last turn again, its history prefilled from nothing (the system prompt's start differs).
_, cold = turn(instructions="Session B. " + system, input=items[:-1], store=False)
print(json.dumps(dict(turn="last, history prefilled again", **cold)), flush=True)
later = [r["ttft_s"] for r in rows[1:]]
print(json.dumps({"first_turn_ttft_s": rows[0]["ttft_s"], "later_turns_ttft_s_max": max(later) if later else None,
                  "later_turns_new_tokens_max": max(r["new"] for r in rows[1:]) if later else None,
                  "last_turn_ttft_s": rows[-1]["ttft_s"], "last_turn_reprefilled_ttft_s": cold["ttft_s"]}))
PY
# The server's own account of each turn: the engine's time to the first token
# against the request's whole time, and the part spent storing the response.
grep -E ' response resp_[0-9a-f]+: ' "$W/serve.err" || true
