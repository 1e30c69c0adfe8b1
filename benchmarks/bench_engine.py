"""tapegrad against micrograd, measured in the same process.

    python benchmarks/bench_engine.py            # full run (a few minutes: micrograd is slow)
    python benchmarks/bench_engine.py --quick    # smaller sizes, for a smoke run
    python benchmarks/bench_engine.py --markdown docs/performance-engine.md

Workloads (the user code is the same for both engines, only the import differs):

* W1: one training step of micrograd's moons demo: 100 samples, ``MLP(2, [16, 16, 1])``,
  SVM max-margin loss + L2, ``zero_grad``, ``backward``, SGD update: the mean step,
  periodic costs included (the default tape's compaction, micrograd's collector).
* W2: a chain ``x = x * 1.0001 + 1e-4`` of 10^6 ops (5·10^5 iterations of two ops).
* W3: a random layered DAG over 1000 leaves: each op combines a node of the previous
  layer with a random one (``*``, ``+``, ``-``, ``relu``, ``* 0.5``); 2·10^5 and 10^6
  ops, then ``sum`` of the last layer and ``backward``.
* Recording and W1 again with the engines taking turns in fresh processes
  (``bench_alternating.py``, 3 rounds): the ratios this VM's speed drift cannot bias.
* W1, W2 and W3 again on the optional numba kernels, when numba is installed (rows
  marked ``[numba]``; their targets are the issue's targets for the compiled kernels).
* Small graphs: 2,000 four-op graphs with their backward; 2,000 batch-size-1 SGD steps
  of ``MLP(2, [4, 1])``; a 3-op backward late on a 4·10^6-row tape against the same on
  an empty tape; a uniform random DAG of 2·10^5 ops whose root reaches few rows.

micrograd runs twice, with its garbage collector off (what an expert does; the ratio
we claim) and on (what users do). With it off, the cycles micrograd leaves are collected
between timed runs, outside the timing, so that it is never timed on fresh pages.
Ratios are micrograd's time over tapegrad's. Its recursive topological sort needs a
raised recursion limit for W3; for W2 it raises ``RecursionError`` (shown on a 5,000-op chain).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
import numpy as np

import tapegrad
import tapegrad.nn

try:
    import micrograd.engine
    import micrograd.nn
except ImportError:  # pragma: no cover - micrograd is a dev dependency
    sys.exit("the benchmark compares against micrograd: pip install -e '.[dev]'")


# ------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------

def collect_if_off() -> None:
    """With the collector off, free the last run's cycles before the next, outside the
    timing: micrograd leaks every graph (closures hold cycles) and would otherwise be
    timed on fresh pages. This is the fastest way to run it, and the peer we claim."""
    if not gc.isenabled():
        gc.collect()


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time of ``fn`` over ``repeat`` runs, and its last result."""
    times, out = [], None
    for _ in range(repeat):
        collect_if_off()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class GC:
    """Run a block with the cyclic garbage collector on or off."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.enable() if self.on else gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable() if self.was else gc.disable()
        gc.collect()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------
# W1: a moons training step
# ------------------------------------------------------------------------------------

def moons_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    np.random.seed(1337)
    random.seed(1337)
    X, y = make_moons(n_samples=100, noise=0.1)
    return X, y * 2 - 1


def moons_step(Value, model, X, y, k: int) -> float:
    """micrograd's demo loop body, verbatim but for the engine passed in."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum(p * p for p in model.parameters())
    total_loss = data_loss + reg_loss
    model.zero_grad()
    total_loss.backward()
    learning_rate = 1.0 - 0.9 * k / 100
    for p in model.parameters():
        p.data -= learning_rate * p.grad
    return total_loss.data


def bench_w1(steps: int, peer_steps: int, warm_up: int = 16, peers: bool = True) -> dict:
    """Mean time per step (not the median, which would hide the periodic costs:
    tapegrad's default tape compacts about every 15 steps, micrograd's collector runs
    when it is on). tapegrad's steps follow ``warm_up`` steps in which the default tape
    grows to its steady size; micrograd's follow one."""
    X, y = moons_data()
    out = {}
    random.seed(1337)
    model = tapegrad.nn.MLP(2, [16, 16, 1])
    for k in range(warm_up):
        moons_step(tapegrad.Value, model, X, y, k)
    times = []
    for k in range(warm_up, warm_up + steps):
        t0 = time.perf_counter()
        moons_step(tapegrad.Value, model, X, y, k)
        times.append(time.perf_counter() - t0)
    out["tapegrad"] = statistics.mean(times)
    out["tapegrad_median"] = statistics.median(times)
    for gc_on in (True, False) if peers else ():
        random.seed(1337)
        model = micrograd.nn.MLP(2, [16, 16, 1])
        with GC(gc_on):
            moons_step(micrograd.engine.Value, model, X, y, 0)
            times = []
            for k in range(1, peer_steps + 1):
                collect_if_off()
                t0 = time.perf_counter()
                moons_step(micrograd.engine.Value, model, X, y, k)
                times.append(time.perf_counter() - t0)
        out["micrograd_gc_on" if gc_on else "micrograd_gc_off"] = statistics.mean(times)
    return out


# ------------------------------------------------------------------------------------
# W2: a long chain
# ------------------------------------------------------------------------------------

def chain(Value, iterations: int):
    x0 = Value(1.0)
    x = x0
    for _ in range(iterations):
        x = x * 1.0001 + 1e-4
    return x0, x


def bench_w2(ops: int, peers: bool = True) -> dict:
    iterations = ops // 2
    out = {"ops": 2 * iterations}
    with tapegrad.Tape() as tape:
        t0 = time.perf_counter()
        x0, x = chain(tapegrad.Value, iterations)
        out["record_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        x.backward()
        out["backward_first_s"] = time.perf_counter() - t0
        out["grad_ok"] = abs(x0.grad / 1.0001**iterations - 1) < 1e-9
        out["backward_s"], _ = timed(x.backward, 3)
        out["bytes_per_node"] = tape.nbytes / len(tape)
    tape.reset()
    if not peers:
        return out
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)                 # Python's default, as users run it
    try:
        with GC(True):
            x0, x = chain(micrograd.engine.Value, 2_500)
            try:
                x.backward()
                out["micrograd"] = "ok"
            except RecursionError:
                out["micrograd"] = "RecursionError on a 5,000-op chain"
    finally:
        sys.setrecursionlimit(limit)
    return out


# ------------------------------------------------------------------------------------
# W3: a random layered DAG
# ------------------------------------------------------------------------------------

def random_dag(Value, n_ops: int, width: int = 1000, seed: int = 0):
    """Layers of ``width`` nodes; each combines its predecessor in the previous layer
    with a random node of it. The op mix keeps magnitudes near 0.1 at any depth."""
    rnd = random.Random(seed)
    leaves = [Value(rnd.uniform(-1, 1)) for _ in range(width)]
    layer = leaves
    made = 0
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
    root = sum(layer)
    return leaves, root, made + width


def bench_w3(n_ops: int, peers: bool = True) -> dict:
    out = {"ops": n_ops}
    with tapegrad.Tape() as tape:
        t0 = time.perf_counter()
        leaves, root, total = random_dag(tapegrad.Value, n_ops)
        out["tapegrad_record_s"] = time.perf_counter() - t0
        out["ops"] = total
        out["rows"] = len(tape)
        t0 = time.perf_counter()
        root.backward()
        out["tapegrad_backward_first_s"] = time.perf_counter() - t0
        out["tapegrad_backward_s"], _ = timed(root.backward, 3)
        ours = [v.grad / 4 for v in leaves[:50]]    # 4 backward calls accumulated
    del leaves, root
    tape.reset()
    if not peers:
        return out
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    for gc_on in (True, False):
        with GC(gc_on):
            rss0 = rss_bytes()
            t0 = time.perf_counter()
            leaves, root, _ = random_dag(micrograd.engine.Value, n_ops)
            rec = time.perf_counter() - t0
            grown = rss_bytes() - rss0
            t0 = time.perf_counter()
            root.backward()
            bwd = time.perf_counter() - t0
        key = "gc_on" if gc_on else "gc_off"
        out[f"micrograd_record_s_{key}"] = rec
        out[f"micrograd_backward_s_{key}"] = bwd
        if gc_on:
            out["micrograd_bytes_per_op"] = grown / out["ops"]
            theirs = np.array([v.grad for v in leaves[:50]])
            scale = np.abs(theirs).max()
            out["grads_agree"] = bool(np.isfinite(scale) and scale > 0 and np.allclose(
                ours, theirs, rtol=1e-9, atol=1e-12 * scale))
        del leaves, root
        gc.collect()
    return out


def bench_memory(n_ops: int) -> dict:
    """Resident bytes per op while a graph is alive (W3 program, values dropped)."""
    gc.collect()
    with tapegrad.Tape() as tape:
        rss0 = rss_bytes()
        leaves, root, n_ops = random_dag(tapegrad.Value, n_ops, seed=1)
        del leaves
        grown = rss_bytes() - rss0
        out = {"rows": len(tape), "nbytes_per_row": tape.nbytes / len(tape),
               "rss_bytes_per_op": grown / n_ops}
        del root
    tape.reset()
    return out


# ------------------------------------------------------------------------------------
# small graphs, late roots, sparse ancestors (engine v2)
# ------------------------------------------------------------------------------------

def peer_times(fn: Callable[[object], Callable[[], object]], repeat: int) -> dict:
    """Median time of ``fn(Value)()`` for tapegrad and micrograd (gc off and on)."""
    out = {"tapegrad": timed(fn(tapegrad.Value), repeat)[0]}
    for gc_on in (False, True):
        with GC(gc_on):
            out["micrograd_gc_on" if gc_on else "micrograd_gc_off"] = timed(
                fn(micrograd.engine.Value), repeat)[0]
    return out


def tiny_loop(Value, n: int = 2000):
    """2,000 four-op graphs, each with its backward (micrograd's README example size)."""
    def run():
        for _ in range(n):
            a, b = Value(1.5), Value(-2.0)
            c = a * b
            d = c + a
            f = d.relu() * b + 1.0
            f.backward()
    return run


def mlp_sgd(Value, n: int = 2000):
    """2,000 batch-size-1 SGD steps of MLP(2, [4, 1]) with micrograd's nn."""
    nn = tapegrad.nn if Value is tapegrad.Value else micrograd.nn
    random.seed(0)
    model = nn.MLP(2, [4, 1])
    rng = random.Random(1)
    data = [([rng.uniform(-1, 1), rng.uniform(-1, 1)], rng.choice([-1.0, 1.0]))
            for _ in range(n)]

    def run():
        for x, y in data:
            out = model(list(map(Value, x)))
            loss = (out + -y) * (out + -y)
            model.zero_grad()
            loss.backward()
            for p in model.parameters():
                p.data -= 0.01 * p.grad
    return run


def uniform_dag(Value, n_ops: int, seed: int = 0):
    """Each op reads two nodes drawn uniformly from all before it (few reach the root)."""
    rng = random.Random(seed)
    nodes = [Value(rng.uniform(-1, 1)) for _ in range(100)]
    for k in range(n_ops):
        a, b = nodes[rng.randrange(len(nodes))], nodes[rng.randrange(len(nodes))]
        nodes.append(a * b if k % 2 else a + b)
    return nodes[-1]


def bench_late(rows: int) -> dict:
    """A 3-op graph's backward on an empty tape and after ``rows`` other rows."""
    def small():
        a, b = tapegrad.Value(1.0), tapegrad.Value(2.0)
        (a * b + a).relu().backward()

    def many():
        for _ in range(200):
            small()
    out = {}
    with tapegrad.Tape() as tape:
        out["empty_s"] = timed(many, 5)[0] / 200
        x = tapegrad.Value(1.0)
        for _ in range(rows // 2):
            x = x * 1.0 + 0.0
        out["late_s"] = timed(many, 5)[0] / 200
        out["rows"] = len(tape)
    tape.reset()
    return out


def bench_sparse(n_ops: int) -> dict:
    """Backward of a uniform random DAG whose root reaches few rows (a fresh root each
    call, so that nothing is reused)."""
    from tapegrad import _graph
    out = {"ops": n_ops}
    with tapegrad.Tape() as tape:
        root = uniform_dag(tapegrad.Value, n_ops)
        cols = tape.columns()
        out["ancestors"] = int(_graph.ancestors(cols.a0, cols.a1, cols.level,
                                                np.array([root.row])).sum())
        out["rows"] = len(tape)

        def fresh():
            (root * 1.0).backward()
        out["tapegrad"] = timed(fresh, 5)[0]
    tape.reset()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    for gc_on in (False, True):
        with GC(gc_on):
            peer_root = uniform_dag(micrograd.engine.Value, n_ops)
            key = "micrograd_gc_on" if gc_on else "micrograd_gc_off"
            out[key] = timed(peer_root.backward, 5)[0]
            del peer_root
    return out


def record_loop(Value, ops: int) -> Callable[[], None]:
    """Scalar recording in a tight loop: ``c = a * b; d = c + a``, ``ops`` ops."""
    a, b = Value(1.0), Value(0.999)

    def run():
        for _ in range(ops // 2):
            c = a * b
            c + a
    return run


def bench_record(ops: int) -> dict:
    """:func:`record_loop` for each engine, one after the other in this process
    (``bench_alternating.py record`` runs them in alternating fresh processes)."""
    with tapegrad.Tape() as tape:
        out = peer_times(lambda Value: record_loop(Value, ops), 3)
    tape.reset()
    return {k: v / ops for k, v in out.items()}


def bench_bulk(calls: int) -> dict:
    """A Layer(16, 16) call (528 rows): bulk recording, tapegrad's neuron-by-neuron
    loop (the scalar recorders), micrograd (gc off / on); seconds per row."""
    def layer_run(nn, Value, per_neuron=False):
        random.seed(0)
        layer = nn.Layer(16, 16)
        x = [Value(0.1 * k) for k in range(16)]

        def run():
            for _ in range(calls):
                if per_neuron:
                    [n(x) for n in layer.neurons]
                else:
                    layer(x)
        return run
    rows = calls * 16 * 33
    with tapegrad.Tape() as tape:
        out = {"tapegrad": timed(layer_run(tapegrad.nn, tapegrad.Value), 5)[0] / rows,
               "loop": timed(layer_run(tapegrad.nn, tapegrad.Value, True), 5)[0] / rows}
    tape.reset()
    for gc_on in (False, True):
        with GC(gc_on):
            out["micrograd_gc_on" if gc_on else "micrograd_gc_off"] = timed(
                layer_run(micrograd.nn, micrograd.engine.Value), 5)[0] / rows
    return out


# ------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------

def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f} ms" if s >= 1e-3 else f"{s * 1e6:,.1f} us"


def _peer_row(name: str, r: dict, target: str, scale: float = 1.0, unit=_ms) -> tuple:
    """A table row: tapegrad, micrograd gc off, gc on, ratio against gc off (and on)."""
    off, on, ours = r["micrograd_gc_off"], r["micrograd_gc_on"], r["tapegrad"]
    return (name, unit(ours * scale), unit(off * scale), unit(on * scale),
            f"{off / ours:.2f}x ({on / ours:.1f}x)", target)


def numba_available() -> bool:
    """Whether the optional numba kernels can be loaded (``pip install -e ".[numba]"``)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def kernels_set(name: str):
    """Run the block on the kernels ``name`` (loaded first), then restore the choice."""
    previous = tapegrad.set_kernels(name)
    try:
        yield
    finally:
        tapegrad.set_kernels(previous)


def bench_numba(quick: bool, sizes: list[int]) -> dict | None:
    """W1, W2 and W3 again on the numba kernels (their compile or cache load before)."""
    if not numba_available():
        print("numba not installed (pip install -e '.[numba]'): no compiled-kernel rows")
        return None
    print("numba kernels: W1, W2, W3 ...", flush=True)
    t0 = time.perf_counter()
    with kernels_set("numba"):
        out: dict = {"load_s": time.perf_counter() - t0}
        out["w1"] = bench_w1(steps=5 if quick else 30, peer_steps=0,
                             warm_up=2 if quick else 16, peers=False)
        out["w2"] = bench_w2(10**5 if quick else 10**6, peers=False)
        out["w3"] = [bench_w3(n, peers=False) for n in sizes]
    return out


def numba_report(res: dict) -> list[tuple[str, ...]]:
    """Rows for the numba kernels, against the same run's micrograd figures."""
    nb = res.get("numba")
    if not nb:
        return []
    w1, peer = nb["w1"], res["w1"]
    rows = [(f"[numba] W1 moons step, mean (median {w1['tapegrad_median'] * 1e3:.1f} ms)",
             _ms(w1["tapegrad"]), _ms(peer["micrograd_gc_off"]), _ms(peer["micrograd_gc_on"]),
             f"{peer['micrograd_gc_off'] / w1['tapegrad']:.2f}x "
             f"({peer['micrograd_gc_on'] / w1['tapegrad']:.1f}x)", ">= 5x faster")]
    w2 = nb["w2"]
    rows.append((f"[numba] W2 chain of {w2['ops']:,} ops, backward per op",
                 f"{w2['backward_first_s'] / w2['ops'] * 1e9:.0f} ns first, "
                 f"{w2['backward_s'] / w2['ops'] * 1e9:.1f} ns again", res["w2"]["micrograd"],
                 "-", "-", "<= 10 ns (#13)"))
    for w3, peer3 in zip(nb["w3"], res["w3"]):
        n, first, again = w3["ops"], w3["tapegrad_backward_first_s"], w3["tapegrad_backward_s"]
        rows.append((f"[numba] W3 layered DAG {n:,} ops, backward",
                     f"{_ms(first)} first, {_ms(again)} again",
                     _ms(peer3["micrograd_backward_s_gc_off"]),
                     _ms(peer3["micrograd_backward_s_gc_on"]),
                     f"{peer3['micrograd_backward_s_gc_off'] / first:.1f}x (first call, gc off); "
                     f"{first / n * 1e9:.0f} / {again / n * 1e9:.1f} ns per op",
                     "<= 15 ns per op (#13, 2e5)"))
    return rows


def _alternating_row(label: str, alt: dict, target: str) -> tuple[str, ...]:
    """A row from ``bench_alternating.alternate``: medians of each engine's figures, the
    median and range of the per-round ratios."""
    med = {e: statistics.median(v) for e, v in alt["figures"].items()}
    off, on = alt["ratios"]["micrograd_gc_off"], alt["ratios"]["micrograd_gc_on"]
    unit = alt["unit"].split("/")[0]
    return (f"{label} ({len(off)} rounds)", f"{med['tapegrad']:,.4g} {unit}",
            f"{med['micrograd_gc_off']:,.4g} {unit}", f"{med['micrograd_gc_on']:,.4g} {unit}",
            f"{statistics.median(off):.2f}x ({statistics.median(on):.1f}x); rounds "
            f"{min(off):.2f}-{max(off):.2f}x", target)


def report(res: dict) -> list[tuple[str, ...]]:
    """Rows: workload, tapegrad, micrograd gc off, micrograd gc on, ratio, target."""
    ns = lambda s: f"{s * 1e9:,.0f} ns"   # noqa: E731
    rows = [
        _peer_row("tiny graphs: 2,000 x (4 ops + backward)", res["tiny"], ">= 2x faster"),
        _peer_row("MLP(2,[4,1]): 2,000 batch-1 SGD steps", res["mlp"], ">= 2x faster"),
    ]
    late = res["late"]
    rows.append((f"3-op backward at row {late['rows']:,} vs on an empty tape",
                 f"{late['late_s'] * 1e6:.1f} us vs {late['empty_s'] * 1e6:.1f} us", "-", "-",
                 f"{late['late_s'] / late['empty_s']:.2f} (late / empty)", "<= 1.5"))
    sp = res["sparse"]
    rows.append(_peer_row(f"uniform DAG {sp['ops']:,} ops, backward ({sp['ancestors']:,} "
                          f"ancestors, {100 * sp['ancestors'] / sp['rows']:.1f}%)", sp,
                          ">= 5x faster"))
    rows.append(_peer_row("recording c = a*b; d = c + a, per op", res["record"],
                          ">= 2x faster (#13)", unit=ns))
    bulk = res["bulk"]
    rows.append(_peer_row(f"nn.Layer(16, 16) call, per row (bulk; neuron loop "
                          f"{bulk['loop'] * 1e9:,.0f} ns)", bulk, "bit-identical rows", unit=ns))
    w1 = res["w1"]
    rows.append(_peer_row(f"W1 moons step (record + backward + SGD), mean (median "
                          f"{w1['tapegrad_median'] * 1e3:.1f} ms)", w1,
                          ">= 5x faster (#13)"))
    for workload, label, target in (
            ("record", "recording, per op, alternating fresh processes", ">= 2x faster (#13)"),
            ("w1", "W1 moons step, mean, alternating fresh processes", ">= 5x faster (#13)")):
        alt = res.get("alternating", {}).get(workload)
        if alt is not None:
            rows.append(_alternating_row(label, alt, target))
    w2 = res["w2"]
    rows.append((f"W2 chain of {w2['ops']:,} ops, backward per op",
                 f"{w2['backward_first_s'] / w2['ops'] * 1e9:.0f} ns first, "
                 f"{w2['backward_s'] / w2['ops'] * 1e9:.0f} ns again", w2["micrograd"], "-", "-",
                 "first call <= 60 ns (#13)"))
    for w3 in res["w3"]:
        n = w3["ops"]
        rows.append((f"W3 layered DAG {n:,} ops, backward",
                     f"{_ms(w3['tapegrad_backward_first_s'])} first, "
                     f"{_ms(w3['tapegrad_backward_s'])} again",
                     _ms(w3["micrograd_backward_s_gc_off"]), _ms(w3["micrograd_backward_s_gc_on"]),
                     f"{w3['micrograd_backward_s_gc_off'] / w3['tapegrad_backward_first_s']:.1f}x "
                     f"(first call, gc off); {w3['tapegrad_backward_first_s'] / n * 1e9:.0f} / "
                     f"{w3['tapegrad_backward_s'] / n * 1e9:.0f} ns per op",
                     "<= 100 ns per op (#13, 2e5)"))
    mem = res["memory"]
    rows.append(("memory per node", f"{mem['nbytes_per_row']:.0f} B tape "
                 f"({mem['rss_bytes_per_op']:.0f} B RSS)",
                 f"{res['w3'][0]['micrograd_bytes_per_op']:.0f} B RSS", "-", "-", "<= 48 B"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tapegrad vs micrograd (gc off and on)")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--markdown", help="write the table here as Markdown")
    args = parser.parse_args(argv)

    quick = args.quick
    sizes = [10**4] if quick else [2 * 10**5, 10**6]
    res = {"python": sys.version.split()[0], "numpy": np.__version__,
           "tapegrad": tapegrad.__version__, "cpus": os.cpu_count()}
    steps = 200 if quick else 2000
    print("tiny graphs ...", flush=True)
    res["tiny"] = peer_times(lambda V: tiny_loop(V, steps), 5)
    print("MLP SGD ...", flush=True)
    res["mlp"] = peer_times(lambda V: mlp_sgd(V, steps), 3)
    print("late root ...", flush=True)
    res["late"] = bench_late(10**5 if quick else 4 * 10**6)
    print("sparse DAG ...", flush=True)
    res["sparse"] = bench_sparse(2 * 10**4 if quick else 2 * 10**5)
    print("recording ...", flush=True)
    res["record"] = bench_record(2 * 10**4 if quick else 2 * 10**5)
    print("bulk layer ...", flush=True)
    res["bulk"] = bench_bulk(20 if quick else 200)
    print("W1 ...", flush=True)
    res["w1"] = bench_w1(steps=5 if quick else 30, peer_steps=1 if quick else 3,
                         warm_up=2 if quick else 16)
    if not quick:      # the same two rows, engines taking turns in fresh processes
        from bench_alternating import alternate
        res["alternating"] = {}
        for workload in ("record", "w1"):
            print(f"{workload}, alternating processes ...", flush=True)
            res["alternating"][workload] = alternate(workload, rounds=3)
    print("W2 ...", flush=True)
    res["w2"] = bench_w2(10**5 if quick else 10**6)
    res["w3"] = []
    for n in sizes:
        print(f"W3 {n} ...", flush=True)
        res["w3"].append(bench_w3(n))
    res["memory"] = bench_memory(sizes[-1])
    res["numba"] = bench_numba(quick, sizes)
    res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = report(res) + numba_report(res)
    head = ("workload", "tapegrad", "micrograd gc off", "micrograd gc on",
            "ratio vs gc off (gc on)", "target")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"W3 gradients agree with micrograd: {[w['grads_agree'] for w in res['w3']]}; "
          f"W2 gradient exact to 1e-9: {res['w2']['grad_ok']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
            for r in rows:
                f.write("| " + " | ".join(r) + " |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
