"""The first ``backward()`` of a big graph, which builds its schedule, against a repeat.

    python benchmarks/bench_first.py w2      # chain of 10^6 ops (W2 of bench_engine.py)
    python benchmarks/bench_first.py w3      # random layered DAG of 2e5 ops (W3)
    python benchmarks/bench_first.py w1      # moons training step (W1), median of steps

``TAPEGRAD_KERNELS=numba`` runs them on the numba kernels (loaded, or compiled on a
machine's first run, before the timing; the load time is printed). Run each in a fresh
process, several times, and take the median: the first call's cost
includes touching fresh memory (page faults), which a warm process does not see. Prints
one JSON line: ns/op of the first and of a repeated call, the minor page faults
(``ru_minflt``) the first call took, and how fresh memory is backed (:func:`hugepages`):
``NUMPY_MADVISE_HUGEPAGE=0 python benchmarks/bench_first.py w2`` compares.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
from bench_engine import chain, moons_data, moons_step, random_dag  # noqa: E402

import tapegrad  # noqa: E402
import tapegrad.nn  # noqa: E402


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def hugepages() -> dict:
    """How fresh memory is backed: the kernel's transparent huge pages (``enabled``,
    ``defrag``) and whether NumPy asks for them. NumPy advises huge pages for arrays of
    4 MiB and more unless ``NUMPY_MADVISE_HUGEPAGE=0``; with ``defrag`` at ``madvise``
    the first touch of such an array may stall while the kernel compacts memory, which
    on a busy VM makes first calls slower and their spread wider (docs/performance.md)."""
    out = {"numpy_madvise_hugepage": os.environ.get("NUMPY_MADVISE_HUGEPAGE", "default")}
    for key in ("enabled", "defrag"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{key}") as f:
                text = f.read()
            out[f"thp_{key}"] = text[text.index("[") + 1: text.index("]")]
        except (OSError, ValueError):
            out[f"thp_{key}"] = None
    return out


def first_and_again(root, ops: int) -> dict:
    f0 = faults()
    t0 = time.perf_counter()
    root.backward()
    first = time.perf_counter() - t0
    f1 = faults()
    again = []
    for _ in range(3):
        t0 = time.perf_counter()
        root.backward()
        again.append(time.perf_counter() - t0)
    return {"first_ns_op": first / ops * 1e9, "again_ns_op": statistics.median(again) / ops * 1e9,
            "first_minflt": f1 - f0}


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "w2"
    out: dict = {"workload": which, "kernels": tapegrad.kernels(), **hugepages()}
    if tapegrad.kernels() != "numpy":     # TAPEGRAD_KERNELS=numba: load them first, untimed
        t0 = time.perf_counter()
        tapegrad.set_kernels(tapegrad.kernels())
        out["kernels_load_s"] = time.perf_counter() - t0
    if which == "w2":
        ops = int(float(sys.argv[2])) if len(sys.argv) > 2 else 10**6
        with tapegrad.Tape():
            x0, x = chain(tapegrad.Value, ops // 2)
            out.update(first_and_again(x, ops))
            out["grad"] = x0.grad
    elif which == "w3":
        ops = int(float(sys.argv[2])) if len(sys.argv) > 2 else 200_000
        with tapegrad.Tape():
            leaves, root, total = random_dag(tapegrad.Value, ops)
            out.update(first_and_again(root, total))
            out["grad0"] = leaves[0].grad
    else:
        X, y = moons_data()
        random.seed(1337)
        model = tapegrad.nn.MLP(2, [16, 16, 1])
        moons_step(tapegrad.Value, model, X, y, 0)
        times = []
        for k in range(1, 31):
            t0 = time.perf_counter()
            moons_step(tapegrad.Value, model, X, y, k)
            times.append(time.perf_counter() - t0)
        out["step_ms"] = statistics.median(times) * 1e3
        out["w0"] = model.parameters()[0].data
    print(json.dumps(out))


if __name__ == "__main__":
    main()
