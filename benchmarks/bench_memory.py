"""Memory of the default tape in a micrograd-style training loop, and of reset cycles.

    python benchmarks/bench_memory.py              # 1,000 moons steps (~1 minute)
    python benchmarks/bench_memory.py --steps 200

The moons demo as micrograd users write it records a new graph every step on the
default tape and never says so. The default tape compacts itself (docs/design.md), so
memory reaches a steady state: RSS after 1,000 steps within 10% of RSS after 300 steps,
while a Value the user keeps (here: the loss of step 0) keeps working. Only that one
is kept: every graph a user keeps stays, by design.
Second part: 1,000 cycles of record / backward / reset on an explicit tape keep RSS flat.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
from bench_engine import moons_data  # noqa: E402

from tapegrad import Tape, Value, current_tape  # noqa: E402
from tapegrad.nn import MLP  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def training_loop(steps: int) -> dict:
    X, y = moons_data()
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    tape = current_tape()
    kept = {}
    rows_at, rss_at = {}, {}
    for k in range(steps):
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * s).relu() for yi, s in zip(y, scores)]
        total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= (1.0 - 0.9 * min(k, 99) / 100) * p.grad
        if k == 0:                  # a Value the user keeps: it must keep working
            kept[k] = (total, total.data)
        if k + 1 in (10, 100, 300) or (k + 1) % 250 == 0 or k + 1 == steps:
            gc.collect()
            rows_at[k + 1], rss_at[k + 1] = len(tape), rss_mb()
            print(f"step {k + 1:5d}: default tape {len(tape):9,} rows "
                  f"({tape.nbytes / 2**20:6.1f} MB), RSS {rss_at[k + 1]:7.1f} MB, "
                  f"{len(tape.scope_names):,} scope names", flush=True)
    # Values kept from old steps still read and differentiate
    ok = True
    for value, data in kept.values():
        ok &= value.data == data
        value.backward()
    return {"rows": rows_at, "rss": rss_at, "kept_ok": ok}


def reset_cycles(cycles: int) -> dict:
    tape = Tape("cycles")
    rss = {}
    for k in range(cycles):
        with tape:
            x = Value(0.5)
            for _ in range(2000):
                x = (x * 1.0001).tanh() + 0.001
            x.backward()
        tape.reset()
        if k + 1 in (10, cycles // 2, cycles):
            gc.collect()
            rss[k + 1] = rss_mb()
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=1000)
    args = parser.parse_args(argv)
    res = training_loop(args.steps)
    first = 300 if 300 in res["rss"] else min(res["rss"])
    last = max(res["rss"])
    print(f"RSS after {last} steps / after {first} steps: "
          f"{res['rss'][last] / res['rss'][first]:.3f} (target <= 1.10); tape rows "
          f"{res['rows'][last]:,} vs {res['rows'][first]:,}; "
          f"Values kept from old steps still work: {res['kept_ok']}")
    rss = reset_cycles(args.cycles)
    ks = sorted(rss)
    after = ", ".join(f"{rss[k]:.1f} MB after {k}" for k in ks)
    print(f"record/backward/reset cycles: RSS {after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
