"""A random layered DAG of 10^6 scalar ops over 1,000 inputs, differentiated twice.

    python examples/dag.py                         # 10^6 ops, seed 0
    python examples/dag.py --ops 100000 --seed 3   # smaller, another graph
    python -m tapegrad profile examples/dag.py     # the profiler walk-through (docs/profiling.md)

Workload W3 of ``benchmarks/bench_engine.py``: 1,000 leaves, then layers of 1,000 rows,
each row one of ``a * b``, ``(a + b) * 0.5``, ``(a - b) * 0.5``, ``relu(a)`` or
``a * -0.9 + 0.1`` of the row above and a random row of that layer, until ``--ops`` ops
are recorded; the root is the sum of the last layer. Prints the op count and
``d root / d x0`` (the walk-through's first line), the tape's ``stats()`` and the time
of each ``backward()``. A positional ``N`` is accepted for ``--ops N``, as in
``docs/profiling.md``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from tapegrad import Value, current_tape


def build(n_ops: int, seed: int, width: int) -> tuple[list[Value], Value, int]:
    """The DAG: its leaves, its root and the number of ops recorded."""
    rnd = random.Random(seed)
    leaves = [Value(rnd.uniform(-1, 1)) for _ in range(width)]
    layer, made = leaves, 0
    while made < n_ops:
        nxt = []
        for j in range(width):
            a, b = layer[j], layer[rnd.randrange(width)]
            r = rnd.random()
            if r < 0.25:
                v, k = a * b, 1
            elif r < 0.5:
                v, k = (a + b) * 0.5, 2
            elif r < 0.7:
                v, k = (a - b) * 0.5, 2
            elif r < 0.85:
                v, k = a.relu(), 1
            else:
                v, k = a * -0.9 + 0.1, 2
            nxt.append(v)
            made += k
        layer = nxt
    return leaves, sum(layer), made


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dag.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, metavar="N", help="same as --ops N")
    parser.add_argument("--ops", type=int, default=10**6, help="ops to record (at least)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the graph's shape and inputs")
    parser.add_argument("--width", type=int, default=1000, help="inputs, and rows per layer")
    parser.add_argument("--no-stats", action="store_true", help="do not print tape.stats()")
    args = parser.parse_args(argv)
    if args.n is not None:
        args.ops = args.n
    if args.ops < 1:
        parser.error(f"--ops must be at least 1, got {args.ops}")
    if args.width < 1:
        parser.error(f"--width must be at least 1, got {args.width}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    leaves, root, made = build(args.ops, args.seed, args.width)
    record = time.perf_counter() - start
    times = []
    for _ in range(2):
        start = time.perf_counter()
        root.backward()
        times.append(time.perf_counter() - start)
    print(f"{made:,} ops; d root / d x0 = {leaves[0].grad / 2:.6g}")
    tape = current_tape()
    if not args.no_stats:
        print(tape.stats())
    print(f"recorded in {record:.3f} s ({record / made * 1e9:,.0f} ns per op)")
    for k, seconds in enumerate(times, start=1):
        print(f"backward {k}: {seconds * 1e3:.1f} ms ({seconds / made * 1e9:.0f} ns per op)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
