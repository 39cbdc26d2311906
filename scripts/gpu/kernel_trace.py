#!/usr/bin/env python3
"""Reads a trace written by kernel_trace.c and says where a decode step's time goes.

usage: kernel_trace.py TRACE [TOP]

The decode window is the longest stretch of kernels with no gap over 50 ms (a
bench's generation; loading and the pauses between runs fall outside it), less
its first and last tenth. Over that window: how much of the wall time some
kernel was running (the GPU's busy fraction), the idle gaps between kernels by
size (many short gaps: launch latency; long ones: the GPU waiting for the host),
the kernels by total time, and with KTRACE_API=1 the host's time in each driver
and runtime call.
"""
import collections
import sys


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    kernels, calls, names = [], [], {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 5)
            if parts[0] == "K":
                kernels.append((int(parts[1]), int(parts[2]), parts[5]))
            elif parts[0] in ("D", "R"):
                calls.append((int(parts[1]), int(parts[2]), parts[0], int(parts[3])))
            elif parts[0] == "N":
                names[(parts[1], int(parts[2]))] = " ".join(parts[3:])
    if not kernels:
        sys.exit("no kernels in the trace")
    kernels.sort()
    # Longest stretch without a 50 ms gap.
    stretches, start = [], 0
    for i in range(1, len(kernels) + 1):
        if i == len(kernels) or kernels[i][0] - kernels[i - 1][1] > 50_000_000:
            stretches.append((start, i))
            start = i
    best = max(stretches, key=lambda r: kernels[r[1] - 1][1] - kernels[r[0]][0])
    run = kernels[best[0]:best[1]]
    t0, t1 = run[0][0], run[-1][1]
    lo, hi = t0 + (t1 - t0) // 10, t1 - (t1 - t0) // 10
    window = [k for k in run if k[0] >= lo and k[1] <= hi]
    wall = hi - lo
    busy, end = 0, lo
    gaps = collections.Counter()
    gap_time = collections.Counter()
    for s, e, _ in window:
        if s > end:
            gap = s - end
            bucket = "<2us" if gap < 2_000 else "2-10us" if gap < 10_000 else "10-100us" if gap < 100_000 else ">=100us"
            gaps[bucket] += 1
            gap_time[bucket] += gap
        busy += max(0, e - max(s, end))
        end = max(end, e)
    print(f"decode window {wall / 1e6:.1f} ms, {len(window)} kernels ({len(window) / (wall / 1e6):.1f} per ms)")
    print(f"GPU busy {busy / wall * 100:.1f}% of the window; kernel time {sum(e - s for s, e, _ in window) / 1e6:.1f} ms")
    for b in ("<2us", "2-10us", "10-100us", ">=100us"):
        print(f"  idle gaps {b:>8}: {gaps[b]:6d}, {gap_time[b] / wall * 100:5.1f}% of the window")
    by_name = collections.defaultdict(lambda: [0, 0])
    for s, e, n in window:
        by_name[n][0] += e - s
        by_name[n][1] += 1
    print(f"kernels by time (share of the window, count per ms, mean us):")
    for n, (t, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {t / wall * 100:5.1f}%  {c / (wall / 1e6):6.2f}/ms  {t / c / 1e3:7.2f}us  {n[:150]}")
    if calls:
        by_call = collections.defaultdict(lambda: [0, 0])
        for s, e, kind, cbid in calls:
            if s >= lo and e <= hi:
                by_call[(kind, cbid)][0] += e - s
                by_call[(kind, cbid)][1] += 1
        print("host API calls in the window (share of the window, count per ms, mean us):")
        for key, (t, c) in sorted(by_call.items(), key=lambda kv: -kv[1][0])[:top]:
            label = names.get(key, f"{key[0]} cbid {key[1]}")
            print(f"  {t / wall * 100:5.1f}%  {c / (wall / 1e6):6.2f}/ms  {t / c / 1e3:7.2f}us  {key[0]} {label}")


if __name__ == "__main__":
    main()
