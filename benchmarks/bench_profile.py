"""What profiling costs: overhead of ``tapegrad.profile()`` on backward, and ``stats()`` time.

    python benchmarks/bench_profile.py            # full run (about a minute)
    python benchmarks/bench_profile.py --quick    # smaller sizes, for a smoke run
    python benchmarks/bench_profile.py --json out.json

* Overhead: the same ``backward()`` timed in pairs, without and inside a ``profile()``
  block, on the moons training step (W1 of ``bench_engine.py``), the random layered
  DAG (W3, 10^5 ops) and a tiny graph (the fixed cost per call). The overhead is the
  median over pairs of (profiled / plain) - 1; the ratio of the fastest runs is shown
  beside it.
* ``stats()`` on a long tape: a chain ``x = x * 1.0001 + 1e-4`` of 5·10^6 iterations
  (10^7 rows; ``--quick``: 10^6 rows), recorded on one tape.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
import numpy as np

import tapegrad
import tapegrad.nn
from tapegrad.profiler import profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import moons_data, random_dag  # noqa: E402


def overhead(backward: Callable[[], None], repeat: int) -> dict:
    """``backward`` timed without and with an active profiler, in pairs.

    The order within a pair alternates, and the overhead is the median of the
    per-pair ratios: robust to load that drifts during the run (shared machines).
    """
    backward()                                    # warm-up

    def plain() -> float:
        t0 = time.perf_counter()
        backward()
        return time.perf_counter() - t0

    def profiled() -> float:
        with profile():
            t0 = time.perf_counter()
            backward()
            return time.perf_counter() - t0

    offs, ons = [], []
    for k in range(repeat):
        if k % 2:
            on, off = profiled(), plain()
        else:
            off, on = plain(), profiled()
        offs.append(off)
        ons.append(on)
    ratios = [on / off for on, off in zip(ons, offs)]
    return {"plain_s": statistics.median(offs), "profiled_s": statistics.median(ons),
            "overhead": statistics.median(ratios) - 1,
            "overhead_min": min(ons) / min(offs) - 1}


def moons_graph(tape: tapegrad.Tape) -> tapegrad.Value:
    """The loss of one moons step (W1), recorded on ``tape``."""
    X, y = moons_data()
    random.seed(1337)
    model = tapegrad.nn.MLP(2, [16, 16, 1])
    with tape:
        inputs = [list(map(tapegrad.Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * s).relu() for yi, s in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        return data_loss + 1e-4 * sum(p * p for p in model.parameters())


def bench_overhead(quick: bool) -> dict:
    out = {}
    tape = tapegrad.Tape("moons")
    loss = moons_graph(tape)
    out["W1 moons step"] = {"rows": len(tape), **overhead(loss.backward, 20 if quick else 200)}
    del loss
    tape.reset()
    with tapegrad.Tape("dag") as tape:
        _, root, _ = random_dag(tapegrad.Value, 10**4 if quick else 10**5)
    out["W3 random DAG"] = {"rows": len(tape), **overhead(root.backward, 10 if quick else 100)}
    del root
    tape.reset()
    with tapegrad.Tape("tiny") as tape:
        a, b = tapegrad.Value(1.5), tapegrad.Value(-2.0)
        c = (a * b + a).relu() * b
    out["tiny graph"] = {"rows": len(tape), **overhead(c.backward, 200)}
    return out


def bench_stats(iterations: int) -> dict:
    gc.collect()
    with tapegrad.Tape("chain") as tape:
        t0 = time.perf_counter()
        x = tapegrad.Value(1.0)
        for _ in range(iterations):
            x = x * 1.0001 + 1e-4
        record = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = tape.stats()
    seconds = time.perf_counter() - t0
    out = {"rows": st.nodes, "depth": st.depth, "longest_chain": st.longest_chain,
           "record_s": record, "stats_s": seconds, "stats_ns_per_row": seconds / st.nodes * 1e9}
    del x
    tape.reset()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="overhead of tapegrad.profile and stats()")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args(argv)

    res = {"python": sys.version.split()[0], "numpy": np.__version__, "cpus": os.cpu_count()}
    print("profiling overhead on backward ...", flush=True)
    res["overhead"] = bench_overhead(args.quick)
    for name, r in res["overhead"].items():
        print(f"  {name:<14} {r['rows']:>9,} rows  backward {r['plain_s'] * 1e3:9.3f} ms, "
              f"profiled {r['profiled_s'] * 1e3:9.3f} ms: overhead {r['overhead'] * 100:+5.1f}% "
              f"(fastest runs {r['overhead_min'] * 100:+5.1f}%)")
    iterations = 5 * 10**5 if args.quick else 5 * 10**6
    print(f"stats() on a chain of {2 * iterations + 1:,} rows ...", flush=True)
    res["stats"] = s = bench_stats(iterations)
    print(f"  recorded in {s['record_s']:.1f} s; stats() {s['stats_s']:.2f} s "
          f"({s['stats_ns_per_row']:.0f} ns/row): depth {s['depth']:,}, "
          f"longest chain {s['longest_chain']:,}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
