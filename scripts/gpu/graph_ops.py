"""Counts the ops of one decode step's graph, by primitive, from the Graphviz
file `hearth bench` writes with HEARTH_GRAPH_DOT=file (MLX's export_to_dot:
one rectangle per op MLX will evaluate, and so encode on CUDA).
usage: python3 graph_ops.py FILE [LAYERS]"""
import collections
import re
import sys


def main():
    text = open(sys.argv[1]).read()
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    ops = re.findall(r'\[label ="([^"]+)", shape=rectangle\]', text)
    counts = collections.Counter(ops)
    print(f"{len(ops)} ops in the step, {len(ops) / layers:.1f} per layer ({layers} layers)")
    for name, n in counts.most_common():
        print(f"{n:6d}  {n / layers:6.2f}/layer  {name}")


if __name__ == "__main__":
    main()
