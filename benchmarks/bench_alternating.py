"""tapegrad and micrograd in alternating fresh processes, ratios taken pair by pair.

    python benchmarks/bench_alternating.py record     # c = a*b; d = c + a, 2·10^5 ops
    python benchmarks/bench_alternating.py w1         # the moons training step
    python benchmarks/bench_alternating.py w1 --rounds 7 --json w1.json

``bench_engine.py`` times the engines one after the other in one process. On a shared
VM whose speed drifts within seconds, that favours whoever runs in the faster stretch,
and interleaving them in one process is no fairer: micrograd leaves the process with a
heap many times larger, which slows our steps by 30-50 %. Here every measurement is a
fresh process (``--child``), the engines take turns (A B C, then C B A, ...), and each
round gives its own ratios: their median and range are what drift cannot bias.

Engines: tapegrad (the current kernels; ``TAPEGRAD_KERNELS=numba`` for the compiled
ones), micrograd with its garbage collector off (the ratio we claim) and on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
from bench_engine import moons_data, moons_step, record_loop

ENGINES = ("tapegrad", "micrograd_gc_off", "micrograd_gc_on")
UNITS = {"record": "ns/op", "w1": "ms/step"}


def child(workload: str, engine: str) -> float:
    """One engine's figure, in this (fresh) process: ns per recorded op, or the mean
    ms per moons step (tapegrad after 16 warm-up steps in which its default tape grows
    to its steady size, micrograd after one; the mean keeps the periodic costs: our
    compaction, micrograd's collector)."""
    if engine == "tapegrad":
        import tapegrad
        import tapegrad.nn
        Value, nn = tapegrad.Value, tapegrad.nn
        if tapegrad.kernels() != "numpy":
            tapegrad.set_kernels(tapegrad.kernels())      # loaded before any timing
    else:
        import micrograd.engine
        import micrograd.nn
        Value, nn = micrograd.engine.Value, micrograd.nn
        if engine == "micrograd_gc_off":
            gc.disable()
    if workload == "record":
        ops = 2 * 10**5
        run = record_loop(Value, ops)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) / ops * 1e9
    X, y = moons_data()
    random.seed(1337)
    model = nn.MLP(2, [16, 16, 1])
    warm, steps = (16, 30) if engine == "tapegrad" else (1, 3)
    for k in range(warm):
        moons_step(Value, model, X, y, k)
    times = []
    for k in range(warm, warm + steps):
        if not gc.isenabled():
            gc.collect()        # micrograd's leaked cycles, freed outside the timing
        t0 = time.perf_counter()
        moons_step(Value, model, X, y, k)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times) * 1e3


def measure(workload: str, engine: str) -> float:
    """:func:`child` in a fresh process."""
    done = subprocess.run([sys.executable, __file__, workload, "--child", engine],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def alternate(workload: str, rounds: int) -> dict:
    """Figures of every engine over ``rounds`` rounds of fresh processes, in turns."""
    figures: dict[str, list[float]] = {e: [] for e in ENGINES}
    for r in range(rounds):
        order = ENGINES if r % 2 == 0 else ENGINES[::-1]
        for engine in order:
            figures[engine].append(measure(workload, engine))
        print(f"round {r + 1}: " + ", ".join(f"{e} {figures[e][-1]:.4g}" for e in ENGINES),
              flush=True)
    ratios = {peer: [p / t for p, t in zip(figures[peer], figures["tapegrad"])]
              for peer in ENGINES[1:]}
    return {"workload": workload, "unit": UNITS[workload],
            "kernels": os.environ.get("TAPEGRAD_KERNELS") or "numpy",
            "figures": figures, "ratios": ratios}


def report(res: dict) -> list[str]:
    unit, lines = res["unit"], []
    for engine, values in res["figures"].items():
        lines.append(f"{engine:18s} median {statistics.median(values):10.4g} {unit} "
                     f"(min {min(values):.4g}, max {max(values):.4g})")
    for peer, values in res["ratios"].items():
        lines.append(f"{peer} / tapegrad: median {statistics.median(values):.2f}x "
                     f"(rounds {min(values):.2f}x to {max(values):.2f}x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(UNITS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(child(args.workload, args.child))
        return 0
    res = alternate(args.workload, args.rounds)
    print("\n".join(report(res)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
