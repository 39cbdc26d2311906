"""One line per `hearth bench` result read from stdin: decode tok/s and the
host's ms per step, labelled with argv[1] (used by ab.sh)."""
import json
import sys

for line in sys.stdin:
    if not line.startswith("{"):
        continue
    j = json.loads(line)
    if "decode_tps" not in j:
        continue
    h = j.get("host_ms", {})
    print(f"{sys.argv[1]:>28s} prompt {j['prompt_tokens']:5d}  decode {j['decode_tps']:7.1f} tok/s  "
          f"build {h.get('build', 0):.2f} queue {h.get('queue', 0):.2f} wait {h.get('wait', 0):.3f} ms/step", flush=True)
