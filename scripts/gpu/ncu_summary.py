"""Sums Nsight Compute's per-kernel GPU times (a `ncu --csv --metrics
gpu__time_duration.sum` log) by kernel name, to see where a decode step's GPU
time goes and how many launches it takes.
usage: python3 ncu_summary.py NCU_CSV [TOKENS]   (TOKENS: decode steps the log spans)"""
import csv
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    tokens = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "nsecond")
        v = float(r["Metric Value"].replace(",", ""))
        us = v / 1000 if unit.startswith("n") else v if unit.startswith("u") else v * 1000
        rows.append((r["Kernel Name"], us))
    by = defaultdict(lambda: [0, 0.0])
    for name, us in rows:
        by[name][0] += 1
        by[name][1] += us
    total = sum(us for _, us in rows)
    print(f"{len(rows)} kernels, {total:.0f} us of GPU time; per decode step ({tokens:g}): "
          f"{len(rows) / tokens:.0f} launches, {total / tokens:.0f} us")
    for name, (n, us) in sorted(by.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"{us / tokens:9.1f} us/step {n / tokens:6.1f} launches/step  {us / n:7.2f} us each  {name[:110]}")


if __name__ == "__main__":
    main()
