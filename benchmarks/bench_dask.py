"""The moons MLP ``Function`` over many inputs: in memory vs Dask on 2 worker processes.

    python benchmarks/bench_dask.py                 # 10^7 inputs (about a minute)
    python benchmarks/bench_dask.py --n 1000000     # quicker
    python benchmarks/bench_dask.py --grad          # value_and_grad too (slow: ~20 us/sample)

``MLP(2, [16, 16, 1])`` recorded once (examples/moons.py's model), ``f = Function(x,
score)``. In memory: ``f(X)`` on a NumPy array in this process (wall time, peak RSS
growth). Dask: the same inputs drawn on the workers (``dask.array.random``), ``f(D)``
reduced there (sum, so only a scalar comes back), on a ``LocalCluster`` of 2 processes
with one thread each: wall time and each worker's peak RSS (``getrusage`` run on the
workers). Then the NumPy speed line of the array-API change: ``f(x)`` and
``value_and_grad`` for one sample and B=1000, against the figures measured before it.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
import numpy as np

from tapegrad import DASK_WORKER_ENV, Function, Tape, Value  # noqa: E402
from tapegrad.nn import MLP  # noqa: E402

# f(x) one sample, f(X) B=1000, value_and_grad one sample, B=1000 (us), measured on this
# machine at c579f50, before the array-API change
BEFORE_US = (22.4, 506.0, 107.8, 21172.0)


def model() -> Function:
    random.seed(0)
    with Tape("moons-mlp"):
        net = MLP(2, [16, 16, 1])
        x = [Value(0.0), Value(0.0)]
        score = net(x)
    return Function(x, score)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_us(fn, arg, n: int) -> float:
    fn(arg)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def numpy_speed(f: Function) -> str:
    x1 = np.array([0.3, -0.2])
    xb = np.random.default_rng(0).uniform(-1, 1, (1000, 2))
    now = (best_us(f, x1, 2000), best_us(f, xb, 200), best_us(f.value_and_grad, x1, 1000),
           best_us(f.value_and_grad, xb, 20))
    names = ("f(x) 1 sample", "f(X) B=1000", "value_and_grad 1 sample",
             "value_and_grad B=1000")
    return "NumPy speed (before -> after, us): " + "; ".join(
        f"{name} {b:,.1f} -> {a:,.1f}" for name, b, a in zip(names, BEFORE_US, now))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--chunk", type=int, default=500_000)
    p.add_argument("--grad", action="store_true", help="also value_and_grad")
    args = p.parse_args(argv)
    import dask.array as da
    from distributed import Client, LocalCluster

    f = model()
    print(numpy_speed(f))
    X = np.random.default_rng(0).uniform(-2, 2, (args.n, 2))
    kinds = [("f(X)", lambda v: v(X).sum(), lambda fn, D: fn(D).sum())]
    if args.grad:
        kinds.append(("value_and_grad", lambda v: v.value_and_grad(X)[1].sum(),
                      lambda fn, D: fn.value_and_grad(D)[1].sum()))
    rows = []
    for name, local, _ in kinds:
        base = peak_mb()
        t0 = time.perf_counter()
        local(f)
        rows.append([name, time.perf_counter() - t0, peak_mb() - base])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      os.environ.get("PYTHONPATH")]))
    import dask
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **DASK_WORKER_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            dashboard_address=None) as cluster, Client(cluster) as client:
        for row, (_, _, remote) in zip(rows, kinds):
            base = client.run(peak_mb)
            D = da.random.default_rng(0).uniform(-2, 2, (args.n, 2), chunks=(args.chunk, 2))
            t0 = time.perf_counter()
            remote(f, D).compute()
            row.append(time.perf_counter() - t0)
            peaks = client.run(peak_mb)
            row.append(sorted(peaks[w] - base[w] for w in peaks))
            row.append(sorted(peaks.values()))
    print(f"\n{args.n:,} inputs, moons MLP (MLP(2, [16, 16, 1])), Dask chunks of "
          f"{args.chunk:,}, 2 worker processes x 1 thread")
    print("| call | in memory s | in memory peak RSS growth MB | Dask s | "
          "per-worker peak RSS growth MB | per-worker peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ls, lm, ds, growth, peaks in rows:
        print(f"| {name} | {ls:.2f} | {lm:,.0f} | {ds:.2f} | "
              f"{' / '.join(f'{g:,.0f}' for g in growth)} | "
              f"{' / '.join(f'{m:,.0f}' for m in peaks)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
