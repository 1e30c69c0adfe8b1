"""Eager ``backward()``: the reverse sweep over a root's ancestors.

Cost follows the root's graph, not the tape (``docs/design.md`` has the picture):

1. **Interval.** Every non-leaf ancestor of the root lies in ``[lo, root]``, the
   smallest interval ending at the root that is closed under non-leaf operands
   (:func:`tapegrad._graph.closure_start`); leaves may lie before it.
2. **Small graphs** (at most :data:`SMALL_ROWS` non-leaf ancestors, found by a
   depth-first walk that gives up beyond that) are swept row by row in Python with
   each op's scalar partials: a few microseconds, no NumPy call.
3. **Larger graphs.** The root's ancestors are found by a few vectorized frontier
   rounds when the graph is shallow (``_graph.ancestors_bfs``: a random DAG whose
   root reaches few rows costs what those rows cost); deep graphs use the interval.
   Those rows become a :class:`tapegrad._plan.Plan` and the one backward schedule,
   :class:`tapegrad._plan.Backward`, computes their adjoints. When the interval
   holds rows that do not reach the root, a reach mask keeps them out.
4. **Gradients.** Non-leaf ancestors get this call's gradient; leaves accumulate.
   Leaves mirrored from another tape pass their share on to their home tape.

After a replay (``Tape.forward()``) the plan and schedule of a root are kept and
reused while the tape's rows stay where they are.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import numpy as np

from . import _graph
from ._plan import Backward, Plan
from ._rows import Columns, Rows
from .ops import OPS

__all__ = ["Timing", "Columns", "backward", "SMALL_ROWS"]

SMALL_ROWS = 160     # graphs of up to this many non-leaf rows are swept row by row in Python
_PLANS_KEPT = 8      # compiled backwards kept per tape


class Timing:
    """Where one sweep spent its time; filled only when a profiler asks for it.

    ``phases`` maps phase name to seconds, ``ops`` maps op name to ``[rows, seconds]``
    spent on its partials, ``groups`` lists ``(level, rows, seconds)`` per level group.
    """

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.ops: dict[str, list] = {}
        self.groups: list[tuple[int, int, float]] = []
        self._last = perf_counter()

    def lap(self, phase: str) -> None:
        now = perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now

    def op(self, name: str, rows: int, seconds: float) -> None:
        entry = self.ops.setdefault(name, [0, 0.0])
        entry[0] += rows
        entry[1] += seconds


def backward(t: Rows, root: int, anomaly: bool = False,
             timing: Timing | None = None) -> int:
    """Add d(root)/d(row) to the gradients of ``root``'s ancestors on ``t``; rows swept.

    With ``anomaly``, raises ``FloatingPointError`` at the first row (in sweep order)
    whose finite gradient times a local partial is nan or inf, before any gradient
    is written.
    """
    if t.has_links():
        t.refresh_links()
    if timing is None:
        graph = t.small_graph(root, SMALL_ROWS)
        if graph is not None:
            return _sequential(t, root, graph, anomaly)
    return _vectorized(t, root, anomaly, timing)


def _sequential(t: Rows, root: int, graph: list[tuple], anomaly: bool) -> int:
    """Row-by-row sweep of a small graph (its non-leaf rows, descending) with the ops'
    scalar partials; leaves collect what is left in ``adj``."""
    vv = t.value_view()
    adj = {root: 1.0}
    pop = adj.pop
    get = adj.get
    grads = []
    for r, code, i, j, c in graph:
        g = pop(r)
        grads.append((r, g))
        op = OPS[code]
        if op.guard:
            continue
        x = vv[i] if i >= 0 else c
        y = vv[j] if j >= 0 else c
        d0, d1 = op.local(x, y, vv[r])
        if anomaly:
            _check_scalar(t, r, op, i, j, d0, d1, g)
        if i >= 0:
            adj[i] = get(i, 0.0) + d0 * g
        if j >= 0:
            adj[j] = get(j, 0.0) + d1 * g
    gv = t.grad_view()
    for r, g in grads:
        gv[r] = g
    _leaf_shares(t, adj)
    return len(graph) + len(adj)


def _check_scalar(t: Rows, r: int, op: Any, i: int, j: int, d0: float, d1: float,
                  g: float) -> None:
    if not np.isfinite(g):
        return
    for slot, arg, d in ((0, i, d0), (1, j, d1)):
        if arg >= 0 and not np.isfinite(d * g):
            raise_anomaly(t, r, slot, d, g)


def raise_anomaly(t: Rows, row: int, slot: int, partial: float, grad: float) -> None:
    """Raise the FloatingPointError of ``detect_anomaly`` for a backward through ``row``."""
    op, a0, a1, _ = t.row(row)
    arg = a0 if slot == 0 else a1
    raise FloatingPointError(
        f"detect_anomaly: backward through {op.name} at row {row} of tape "
        f"{t.name!r}{t.describe(row)}: its gradient {grad!r} times its local "
        f"partial {partial!r} with respect to operand {slot} (row {arg}, value "
        f"{t.value(arg)!r}) is {partial * grad!r}")


def _leaf_shares(t: Rows, shares: dict[int, float]) -> None:
    """Accumulate leaf adjoints; a mirrored leaf's share goes on to its home tape (the
    mirror row holds this call's share)."""
    gv = t.grad_view()
    if not t.has_links():
        for r, g in shares.items():
            gv[r] += g
        return
    mirrors = dict(t.links())
    for r, g in shares.items():
        leaf = mirrors.get(r)
        if leaf is None:
            gv[r] += g
        else:
            gv[r] = g
            leaf.grad += g


def _rows_for(cols: Columns, root: int) -> tuple[np.ndarray, bool]:
    """Tape rows the sweep covers (ascending, leaves included) and whether all of them
    are ancestors of ``root``."""
    lo = _graph.closure_start(cols.low, root)
    exact = _graph.ancestors_bfs(cols.a0, cols.a1, root, lo)
    if exact is not None:
        return exact, True
    a0, a1 = cols.a0[lo: root + 1], cols.a1[lo: root + 1]
    before = np.concatenate((a0[(a0 >= 0) & (a0 < lo)], a1[(a1 >= 0) & (a1 < lo)]))
    rows = np.concatenate((np.unique(before).astype(np.int64), np.arange(lo, root + 1)))
    # an interval row nobody in the interval reads (but the root) does not reach it
    read = _graph.consumers(a0.astype(np.int64) - lo, a1.astype(np.int64) - lo,
                            root + 1 - lo)
    inner = cols.level[lo: root + 1] > 0
    read[-1] = 1
    return rows, not (inner & (read == 0)).any()


def _vectorized(t: Rows, root: int, anomaly: bool, timing: Timing | None) -> int:
    cols = t.columns()
    key = ("backward", root)
    entry = t.plan(key) if root < t.replayed else None
    if entry is None:
        rows, exact = _rows_for(cols, root)
        if timing is not None:
            timing.lap("interval")
        plan = Plan.build(cols, rows, np.empty(0, np.int64), schedule=False)
        back = Backward(plan, int(plan.local(np.array([root]))[0]), exact)
        entry = (plan, back)
        if root < t.replayed:
            t.remember(key, entry, _PLANS_KEPT)
    plan, back = entry
    values = plan.new_values()
    values[: plan.rows.size] = cols.value[plan.rows]
    adj = back.run(values, timing, anomaly)
    if back.anomaly_found is not None:
        local, slot, partial, grad = back.anomaly_found
        raise_anomaly(t, int(plan.rows[local]), slot, partial, grad)
    inner = back.rows
    leaves = plan.leaves
    if back.reached is not None:
        inner = inner[back.reached[inner]]
        leaves = leaves[back.reached[leaves]]
    t.set_grads(plan.rows[inner], adj[inner])
    shares = adj[leaves]
    leaf_rows = plan.rows[leaves]
    if t.has_links():
        _leaf_shares(t, dict(zip(leaf_rows.tolist(), shares.tolist())))
    else:
        t.add_grads(leaf_rows, shares)
    if timing is not None:
        timing.lap("leaves")
    return int(plan.rows.size)
