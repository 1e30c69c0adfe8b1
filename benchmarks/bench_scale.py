"""Cost per row from 10^4 to 10^7 rows: recording, backward, stats(), memory.

    python benchmarks/bench_scale.py                      # up to 10^7 rows (a few minutes)
    python benchmarks/bench_scale.py --max-rows 1000000   # quicker
    python benchmarks/bench_scale.py --plot docs/img/scale.png

Two graphs, each recorded on one explicit ``Tape()``:

* ``chain``: ``x = x * 1.0001 + 1e-4`` repeated (a recurrence: 2 rows per step, one
  level per row, the deepest graph there is);
* ``layered``: an MLP-like random layered DAG: layers of 256 neurons, each neuron
  ``tanh(b + sum of 8 (weight * input))`` over 8 random nodes of the previous layer,
  with 9 weight/bias leaves per layer (17 rows per neuron, fan-out ~8).

Every (graph, size) runs in a fresh Python process, so the peak RSS
(``getrusage``'s ``ru_maxrss``) belongs to that size alone. Measured per size: record
time per row, ``backward()`` time per row for the first call and a repeat,
``stats()`` time, ``tape.nbytes / len(tape)`` (must stay <= 48 bytes), peak RSS and
its growth per row, and how many ``tapegrad.Value`` objects are alive (``gc``) after
recording while the script keeps only the root and the input leaves: Values the user
dropped must be freed (chain: at most a handful). Prints a table (Markdown) and plots
cost per row against size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's tapegrad, in the workers too)

GRAPHS = ("chain", "layered")
MAX_BYTES_PER_ROW = 48
MAX_LIVE_VALUES_CHAIN = 10
WIDTH, FAN_IN = 256, 8


@dataclass
class Result:
    """One (graph, size) measurement, made in its own process."""

    graph: str
    target_rows: int
    rows: int
    record_s: float
    backward_first_s: float
    backward_repeat_s: float
    stats_s: float
    bytes_per_row: float
    baseline_rss_mb: float
    recorded_rss_mb: float  # RSS right after recording (before any backward)
    peak_rss_mb: float
    live_values: int
    check: float            # the root's value (chain: compared with the closed form)

    @property
    def recorded_bytes_per_row(self) -> float:
        """RSS growth over the baseline after recording, per row."""
        return (self.recorded_rss_mb - self.baseline_rss_mb) * 2**20 / self.rows

    @property
    def rss_bytes_per_row(self) -> float:
        """Peak RSS growth over the process's baseline, per row."""
        return (self.peak_rss_mb - self.baseline_rss_mb) * 2**20 / self.rows


def rss_mb() -> float:
    """Current resident set size in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def live_values() -> int:
    """``tapegrad.Value`` objects alive in this process (after a full collection)."""
    from tapegrad import Value

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Value)


def record_chain(rows: int) -> tuple[list, object, float]:
    """Record ``x = x * 1.0001 + 1e-4`` for ``rows // 2`` steps; (leaves kept, root,
    seconds spent recording)."""
    from tapegrad import Value

    t0 = time.perf_counter()
    x0 = Value(1.0)
    x = x0
    for _ in range(rows // 2):
        x = x * 1.0001 + 1e-4
    return [x0], x, time.perf_counter() - t0


def record_layered(rows: int, seed: int = 0) -> tuple[list, object, float]:
    """Record the MLP-like layered DAG with about ``rows`` rows; (leaves kept, root,
    seconds spent recording, not counting drawing the random choices)."""
    from tapegrad import Value

    per_layer = WIDTH * (2 * FAN_IN + 1) + FAN_IN + 1
    layers = max(1, round((rows - WIDTH) / per_layer))
    rng = random.Random(seed)
    # operand choices and constants drawn before recording: only tapegrad work is timed
    picks = [[[rng.randrange(WIDTH) for _ in range(FAN_IN)] for _ in range(WIDTH)]
             for _ in range(layers)]
    start = [rng.uniform(-1, 1) for _ in range(WIDTH)]
    weights = [[rng.uniform(-0.5, 0.5) for _ in range(FAN_IN + 1)] for _ in range(layers)]
    t0 = time.perf_counter()
    inputs = [Value(v) for v in start]
    prev = inputs
    for layer in range(layers):
        w = [Value(c) for c in weights[layer]]
        b, ws = w[0], w[1:]
        out = []
        for pick in picks[layer]:
            act = b
            for wk, k in zip(ws, pick):
                act = act + wk * prev[k]
            out.append(act.tanh())
        prev = out
    root = prev[0]
    for v in prev[1:]:
        root = root + v
    return inputs, root, time.perf_counter() - t0


def measure(graph: str, rows: int) -> Result:
    """Record ``graph`` with about ``rows`` rows on one explicit tape and measure it."""
    from tapegrad import Tape

    gc.collect()
    baseline = rss_mb()
    tape = Tape(f"{graph}-{rows}")
    with tape:
        record = record_chain if graph == "chain" else record_layered
        leaves, root, record_s = record(rows)
    alive = live_values()
    recorded = rss_mb()
    t0 = time.perf_counter()
    root.backward()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    root.backward()
    repeat = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = tape.stats()
    stats_s = time.perf_counter() - t0
    assert stats.nodes == len(tape) and sum(stats.ops.values()) == len(tape)
    return Result(graph, rows, len(tape), record_s, first, repeat, stats_s,
                  tape.nbytes / len(tape), baseline, recorded, peak_rss_mb(),
                  alive - len(leaves) - 1,
                  root.data)


def run_worker(graph: str, rows: int) -> Result:
    """``measure(graph, rows)`` in a fresh interpreter (so peak RSS is this size's own)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", graph, str(rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {graph} {rows:,} failed:\n{proc.stderr}")
    return Result(**json.loads(proc.stdout.strip().splitlines()[-1]))


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    head = ("| graph | rows | record ns/row | backward ns/row (first) | backward ns/row "
            "(repeat) | stats() s | tape B/row | RSS growth B/row after recording | peak RSS "
            "MB | peak RSS growth B/row | dropped Values alive |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r.graph} | {r.rows:,} | {r.record_s / r.rows * 1e9:,.0f} | "
            f"{r.backward_first_s / r.rows * 1e9:,.1f} | "
            f"{r.backward_repeat_s / r.rows * 1e9:,.1f} | {r.stats_s:.3g} | "
            f"{r.bytes_per_row:.0f} | {r.recorded_bytes_per_row:,.0f} | {r.peak_rss_mb:,.0f} | "
            f"{r.rss_bytes_per_row:,.0f} | "
            f"{r.live_values:,} |")
    return "\n".join(lines)


def plot(results: list[Result], path: str) -> None:
    """Cost per row against rows (log-log), one colour per measure, one style per graph."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    measures = {"record": ("record_s", "tab:blue"),
                "backward (first call)": ("backward_first_s", "tab:orange"),
                "backward (repeat)": ("backward_repeat_s", "tab:red"),
                "stats()": ("stats_s", "tab:green")}
    styles = {"chain": ("o", "-"), "layered": ("s", "--")}
    for graph, (marker, line) in styles.items():
        rs = [r for r in results if r.graph == graph]
        if not rs:
            continue
        n = [r.rows for r in rs]
        for name, (field, color) in measures.items():
            ax_t.plot(n, [getattr(r, field) / r.rows * 1e9 for r in rs], line, marker=marker,
                      color=color, label=f"{name}, {graph}")
        ax_m.plot(n, [r.rss_bytes_per_row for r in rs], line, marker=marker, color="tab:purple",
                  label=f"peak RSS growth (backward), {graph}")
        ax_m.plot(n, [r.recorded_bytes_per_row for r in rs], line, marker=marker,
                  color="tab:brown", label=f"RSS growth after recording, {graph}")
        ax_m.plot(n, [r.bytes_per_row for r in rs], line, marker=marker, color="tab:gray",
                  label=f"tape.nbytes / rows, {graph}")
    ax_t.set_xscale("log")
    ax_t.set_yscale("log")
    ax_t.set_xlabel("rows on the tape")
    ax_t.set_ylabel("nanoseconds per row")
    ax_t.set_title("time per row")
    ax_t.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7, ncol=2)
    ax_m.set_xscale("log")
    ax_m.axhline(MAX_BYTES_PER_ROW, color="black", lw=0.8, ls=":")
    ax_m.text(min(r.rows for r in results), MAX_BYTES_PER_ROW, " 48 B/row budget",
              va="bottom", fontsize=8)
    ax_m.set_xlabel("rows on the tape")
    ax_m.set_ylabel("bytes per row")
    ax_m.set_title("memory per row")
    ax_m.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7)
    fig.suptitle("tapegrad at scale: cost per row (benchmarks/bench_scale.py)", fontsize=11)
    fig.savefig(path, dpi=100)


def sizes(max_rows: int) -> list[int]:
    """10^4, 10^5, ... up to ``max_rows``."""
    out, n = [], 10_000
    while n <= max_rows:
        out.append(n)
        n *= 10
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=10**7,
                        help="largest graph, in rows (default 10^7)")
    parser.add_argument("--graphs", nargs="+", choices=GRAPHS, default=list(GRAPHS))
    parser.add_argument("--plot", default=str(Path(__file__).parents[1] / "docs" / "img"
                                              / "scale.png"),
                        help="where to write the plot ('' for none)")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("GRAPH", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        graph, rows = args.worker[0], int(args.worker[1])
        print(json.dumps(asdict(measure(graph, rows))))
        return 0
    if args.max_rows < 10_000:
        parser.error("--max-rows must be at least 10000")
    results = []
    for rows in sizes(args.max_rows):
        for graph in args.graphs:
            r = run_worker(graph, rows)
            results.append(r)
            print(f"{graph:8s} {r.rows:>12,} rows: record {r.record_s:7.2f} s, backward "
                  f"{r.backward_first_s:6.2f} s / {r.backward_repeat_s:6.2f} s, stats "
                  f"{r.stats_s:6.2f} s, peak RSS {r.peak_rss_mb:7.0f} MB, "
                  f"{r.live_values} Values alive", flush=True)
    print()
    print(table(results))
    problems = []
    for r in results:
        if r.bytes_per_row > MAX_BYTES_PER_ROW:
            problems.append(f"{r.graph} {r.rows:,}: {r.bytes_per_row:.1f} bytes per row")
        if r.graph == "chain" and r.live_values > MAX_LIVE_VALUES_CHAIN:
            problems.append(f"chain {r.rows:,}: {r.live_values} dropped Values still alive")
        if r.graph == "chain":
            steps = r.target_rows // 2
            a, b = 1.0001, 1e-4
            exact = a**steps * (1.0 + b / (a - 1)) - b / (a - 1)
            if abs(r.check - exact) > 1e-6 * abs(exact):
                problems.append(f"chain {r.rows:,}: value {r.check!r}, expected {exact!r}")
    if args.plot:
        plot(results, args.plot)
        print(f"\nplot written to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(problems))
        return 1
    print(f"\nchecks passed: tape bytes per row <= {MAX_BYTES_PER_ROW}; dropped Values freed "
          f"(chain: <= {MAX_LIVE_VALUES_CHAIN} alive besides the root and the leaf); chain "
          "values match the closed form")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
