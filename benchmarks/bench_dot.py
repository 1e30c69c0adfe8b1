"""Streaming a whole tape to DOT with ``tapegrad.viz.export_dot``: time and memory.

    python benchmarks/bench_dot.py                    # a 10^6-row chain
    python benchmarks/bench_dot.py --rows 200000 --graph mlp

Graphs:

* ``chain``: ``x = x * 1.0001 + 1e-4`` (two rows per step), then ``backward``.
* ``mlp``: ``MLP(4, [16, 16, 1])`` applied to random inputs until the tape holds
  ``--rows`` rows; the outputs are summed and ``backward`` runs.

Reported for ``export_dot``: wall time (median of ``--repeat`` runs, without
tracemalloc), rows per second, file size, the peak of Python and NumPy allocations
(tracemalloc, in one more export), and the peak resident set size during the exports
above the RSS before them (Linux: the peak is reset through /proc/self/clear_refs).
Also timed on the same tape: the node-cap check of ``draw_dot`` (which walks the
ancestors), ``draw_dot`` collapsed (``"chains"`` for the chain, ``"levels"`` for the
MLP) and ``draw_dot(around=root, depth=3)``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)

from tapegrad import Tape, Value
from tapegrad.nn import MLP
from tapegrad.viz import GraphTooLargeError, draw_dot, export_dot


def chain_tape(rows: int) -> tuple[Tape, Value]:
    with Tape(name="chain") as tape:
        x = Value(1.0, label="x")
        for _ in range(max(rows // 2, 1)):
            x = x * 1.0001 + 1e-4
    x.backward()
    return tape, x


def mlp_tape(rows: int) -> tuple[Tape, Value]:
    random.seed(0)
    with Tape(name="mlp") as tape:
        model = MLP(4, [16, 16, 1])
        total = Value(0.0, label="total")
        while len(tape) < rows:
            x = [random.uniform(-1, 1) for _ in range(4)]
            total = total + model(x)
    total.backward()
    return tape, total


GRAPHS: dict[str, Callable[[int], tuple[Tape, Value]]] = {"chain": chain_tape, "mlp": mlp_tape}
COLLAPSE = {"chain": "chains", "mlp": "levels"}   # the view that suits each graph


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def rss_mb() -> float:
    """Current resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def measure_export(tape: Tape, path: Path, repeat: int) -> dict[str, float]:
    before = rss_mb()
    exact_peak = reset_peak_rss()
    runs = [timed(lambda: export_dot(tape, path)) for _ in range(repeat)]
    peak = peak_rss_mb()
    seconds, rows = statistics.median(t for t, _ in runs), runs[0][1]
    tracemalloc.start()
    export_dot(tape, path)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"rows": rows, "seconds": seconds, "file_mb": path.stat().st_size / 2**20,
            "traced_peak_mb": traced_peak / 2**20, "rss_before_mb": before,
            "rss_peak_mb": peak, "rss_exact": exact_peak}


def count_nodes(graph: object) -> int:
    """Nodes of a pydot graph and its clusters."""
    return len(graph.get_nodes()) + sum(count_nodes(s) for s in graph.get_subgraphs())


def measure_draw(root: Value, collapse: str) -> dict[str, object]:
    def refused() -> str:
        try:
            draw_dot(root)
        except GraphTooLargeError as err:
            return str(err)
        return "drawn"

    cap, message = timed(refused)
    drawn, graph = timed(lambda: draw_dot(root, collapse=collapse, max_nodes=10**5))
    around, _ = timed(lambda: draw_dot(root, around=root, depth=3))
    return {"cap_seconds": cap, "cap_message": message, "collapse": collapse,
            "collapsed_seconds": drawn, "collapsed_nodes": count_nodes(graph),
            "around_seconds": around}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10**6, help="tape size (default 10^6)")
    parser.add_argument("--graph", choices=sorted(GRAPHS), default="chain")
    parser.add_argument("--repeat", type=int, default=3,
                        help="exports to time; the median is shown (default 3)")
    parser.add_argument("--out", type=Path, default=None,
                        help="DOT file to write (default: a temporary file, removed after)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error(f"--rows and --repeat must be >= 1, got {args.rows} and {args.repeat}")

    build, (tape, root) = timed(lambda: GRAPHS[args.graph](args.rows))
    print(f"{args.graph} tape: {len(tape):,} rows, recorded + backward in {build:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "tape.dot"
        res = measure_export(tape, path, args.repeat)
    draw = measure_draw(root, COLLAPSE[args.graph])

    rss_note = "" if res["rss_exact"] else " (process peak: clear_refs unsupported)"
    print(f"export_dot (median of {args.repeat}): {res['seconds']:.2f} s, "
          f"{res['rows'] / res['seconds']:,.0f} rows/s, "
          f"{res['file_mb']:.1f} MiB of DOT")
    print(f"  peak traced allocations (tracemalloc): {res['traced_peak_mb']:.1f} MiB")
    print(f"  RSS: {res['rss_before_mb']:.0f} MiB before, peak {res['rss_peak_mb']:.0f} MiB "
          f"during (+{res['rss_peak_mb'] - res['rss_before_mb']:.0f} MiB){rss_note}")
    print(f"draw_dot(root) refused in {draw['cap_seconds']:.2f} s: "
          f"{draw['cap_message'][:80]}...")
    print(f"draw_dot(root, collapse={draw['collapse']!r}): {draw['collapsed_seconds']:.2f} s, "
          f"{draw['collapsed_nodes']:,} nodes")
    print(f"draw_dot(root, around=root, depth=3): {draw['around_seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
