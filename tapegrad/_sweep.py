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

from . import _context, _graph, ops
from ._plan import KEEP_PAGES_FROM, Backward, Plan, keep_pages
from ._rows import STAGE_WIDTH, Columns, Rows
from .ops import OPS

__all__ = ["Timing", "Columns", "backward", "SMALL_ROWS"]

SMALL_ROWS = 1000    # graphs of up to this many rows are swept row by row in Python
_BIG_LEVELS_KEPT = 64    # root levels remembered as "too big for the row walk", per tape
_SKIP_SLACK = 64     # ... while the rows it skips stay within 64 + 2 per row swept
_PLANS_KEPT = 2      # backward schedules kept per tape (by root)


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


def run_backward(t: Rows, root: int, level: int | None = None) -> None:
    """``backward()`` of ``root`` (at ``level``, if the caller knows it) as users call
    it: anomaly checks while a ``detect_anomaly()`` block is open, timed for the
    innermost profiler probe."""
    anomaly = bool(_context.anomaly.depth)
    probe = _context.innermost_probe()
    if probe is None:
        backward(t, root, anomaly, level=level)
        return
    timing = Timing()
    start = perf_counter()
    swept = backward(t, root, anomaly, timing)
    probe.on_backward(t.name, swept, perf_counter() - start, timing)


def backward(t: Rows, root: int, anomaly: bool = False,
             timing: Timing | None = None, level: int | None = None) -> int:
    """Add d(root)/d(row) to the gradients of ``root``'s ancestors on ``t``; the number
    of non-leaf rows swept.

    With ``anomaly``, raises ``FloatingPointError`` at the first row (in sweep order)
    whose finite gradient times a local partial is nan or inf, before any gradient
    is written.

    ``level``: the root's level, if known. The row-by-row sweep is tried first unless
    a root of this level had a graph too big for it before (:attr:`Rows.big_levels`):
    each step of a training loop, or a replay's backward, would walk
    :data:`SMALL_ROWS` rows in Python only to give up. A root deeper than
    :data:`SMALL_ROWS` levels has more non-leaf ancestors than that (one per level on
    its longest path): it is never tried.
    """
    if t.has_links():
        t.refresh_links()
    big = t.big_levels
    if timing is None and (level is None or (level not in big and level <= SMALL_ROWS)):
        swept = _small(t, root, SMALL_ROWS, anomaly)
        if swept >= 0:
            return swept
    swept = _vectorized(t, root, anomaly, timing)
    if level is not None and swept > SMALL_ROWS:
        if len(big) >= _BIG_LEVELS_KEPT:
            big.clear()
        big.add(level)
    return swept


def _small(t: Rows, root: int, limit: int, anomaly: bool, slack: int = _SKIP_SLACK) -> int:
    """Backward of a small graph row by row with the ops' scalar partials.

    Rows are visited from the root downwards; a row takes part when it has received
    an adjoint, and the walk ends when no non-leaf row is waiting (so rows of other
    graphs in between are only skipped, and leaves below the graph are never read).
    Staged rows are read where they are: no flush, no NumPy call. ``+ - * neg relu
    tanh`` have their partials written out here (``tests/test_record.py`` checks them
    against the op table); the other ops call their scalar rule. Returns the non-leaf
    rows swept, or -1 (nothing written) once more than ``limit`` non-leaf rows are
    swept or the rows skipped exceed ``slack`` plus two per row swept (the root's graph
    is spread thinly over other rows: the vectorized path suits it better)."""
    stage, f, opv, a0v, a1v, cv, vv, gv = t.row_views()
    adj = {root: 1.0}
    get = adj.get
    pop = adj.pop
    inner = []
    w = STAGE_WIDTH
    pending = 0 if (opv[root] if root < f else stage[(root - f) * w]) == 0 else 1
    r = root
    while pending:
        g = pop(r, None)
        if g is None:
            slack -= 1
            if slack < 0:
                return -1
            r -= 1
            continue
        if r >= f:
            k = (r - f) * w
            code, i, j, c = stage[k: k + 4]
        else:
            code, i, j, c = opv[r], a0v[r], a1v[r], cv[r]
        if code == 0:                          # a leaf inside the graph's rows
            adj[r] = g                         # (collected with the others below)
            r -= 1
            continue
        pending -= 1
        inner.append((r, g))
        if len(inner) > limit:
            return -1
        slack += 2
        if code == _MUL:
            if j >= 0:
                d0 = vv[j] * g
                d1 = (vv[i] if i >= 0 else c) * g
            else:
                d0, d1 = c * g, 0.0
        elif code == _ADD:
            d0 = d1 = g
        elif anomaly or code not in _INLINE:
            if code == _CUSTOM:                # the user's closure moves the gradient
                shares = _closure_shares(t, r, i, j, g, gv)
                for a, share in shares:
                    pending += _give(adj, a, share, opv, stage, f)
                r -= 1
                continue
            rule = _SCALAR_PARTIALS[code]
            if rule is None:                   # a guard: nothing flows through it
                r -= 1
                continue
            x = vv[i] if i >= 0 else c
            y = vv[j] if j >= 0 else c
            try:
                d0, d1 = rule(x, y, vv[r])
            except (ArithmeticError, ValueError):
                d0, d1 = OPS[code].local(x, y, vv[r])
            if anomaly:
                _check_scalar(t, r, OPS[code], i, j, d0, d1, g)
            d0 *= g
            d1 *= g
        elif code == _RELU:
            d0, d1 = (1.0 if vv[r] > 0 else 0.0) * g, 0.0      # 0 * nan stays nan
        elif code == _SUB:
            d0, d1 = g, -g
        elif code == _TANH:
            o = vv[r]
            d0, d1 = (1.0 - o * o) * g, 0.0
        else:                                  # neg
            d0, d1 = -g, 0.0
        if i >= 0:
            old = get(i)
            if old is None:
                adj[i] = d0
                if (opv[i] if i < f else stage[(i - f) * w]) != 0:
                    pending += 1               # a non-leaf row to visit later
            else:
                adj[i] = old + d0
        if j >= 0:
            old = get(j)
            if old is None:
                adj[j] = d1
                if (opv[j] if j < f else stage[(j - f) * w]) != 0:
                    pending += 1
            else:
                adj[j] = old + d1
        r -= 1
    for r, g in inner:
        gv[r] = g
    if t.has_links():
        _leaf_shares(t, adj)
    else:
        for r, g in adj.items():
            gv[r] += g
    return len(inner)


def _give(adj: dict, a: int, share: float, opv: memoryview, stage: list, f: int) -> int:
    """Add ``share`` to the adjoint of row ``a``; 1 if ``a`` is a non-leaf row that
    starts waiting for its visit, else 0."""
    old = adj.get(a)
    if old is not None:
        adj[a] = old + share
        return 0
    adj[a] = share
    return int((opv[a] if a < f else stage[(a - f) * STAGE_WIDTH]) != 0)


def _closure_shares(t: Rows, r: int, i: int, j: int, g: float,
                    gv: memoryview) -> list[tuple[int, float]]:
    """Run the ``_backward`` closure of custom row ``r`` (adjoint ``g``) the way
    micrograd does, on ``.grad``, and return what it added to each operand row; the
    operands' ``.grad`` are left as they were (the sweep writes them at the end)."""
    fn = t.closure(r)
    if fn is None:
        return []
    kids = list(dict.fromkeys(a for a in (i, j) if a >= 0))
    before = [gv[a] for a in kids]
    gv[r] = g
    fn()
    shares = [(a, gv[a] - b) for a, b in zip(kids, before)]
    for a, b in zip(kids, before):
        gv[a] = b
    return shares


_SCALAR_PARTIALS = ops.SCALAR_PARTIALS      # shared: grows with defop()
_CUSTOM = ops.CUSTOM.code
_ADD, _SUB, _MUL, _NEG, _RELU, _TANH = (ops.BY_NAME[n].code
                                       for n in ("add", "sub", "mul", "neg", "relu", "tanh"))
_INLINE = frozenset((_ADD, _SUB, _MUL, _NEG, _RELU, _TANH))


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
    mirrors = dict(t.links())
    gv = t.row_views()[7]
    for r, g in shares.items():
        leaf = mirrors.get(r)
        if leaf is None:
            gv[r] += g
        else:
            gv[r] = g
            leaf.grad += g


def _schedule(t: Rows, cols: Columns, root: int) -> tuple[Plan, Backward]:
    """Plan and backward schedule for ``root``: over the ancestors themselves when a
    few frontier rounds find them (shallow graphs), else over the root's closed
    interval and the leaves it reads. The schedule is reused when the same root is
    swept again, and when the last interval swept had the same structure (a training
    loop records the same graph every step)."""
    entry = t.plan(("backward", root))
    if entry is not None:
        return entry
    exact = None
    if cols.level[root] <= _graph.BFS_ROUNDS:     # deeper graphs cannot finish in time
        exact = _graph.ancestors_bfs(cols.a0, cols.a1, root)
    if exact is not None:
        plan = Plan.build(cols, exact, np.empty(0, np.int64), schedule=False)
        entry = (plan, Backward(plan, plan.rows.size - 1, True))
    else:
        lo = _graph.closure_start(cols.low, root)
        if root + 1 - lo >= KEEP_PAGES_FROM:     # before the build: its temporaries reuse
            keep_pages()                         # each other's pages too
        plan = Plan.for_backward(cols, lo, root + 1)
        last = t.plan(("structure",))
        if last is not None and last[0].same_structure(plan):
            entry = (plan, last[1])
        else:
            # root: the last row; whether all interval rows reach it, Backward finds out
            entry = (plan, Backward(plan, plan.rows.size - 1, exact=None))
            t.remember(("structure",), entry, kept=1)
    t.remember(("backward", root), entry, _PLANS_KEPT)
    return entry


def _vectorized(t: Rows, root: int, anomaly: bool, timing: Timing | None) -> int:
    cols = t.columns()
    plan, back = _schedule(t, cols, root)
    if (plan.op == _CUSTOM).any():             # user closures run row by row, in order
        return _small(t, root, 1 << 62, anomaly, 1 << 62)
    if timing is not None:
        timing.lap("interval")
    values = plan.new_values()
    n, k = plan.rows.size, plan.range_from
    if k >= 0:                                 # the leaves before an interval, then it
        lo = int(plan.rows[k]) if k < n else 0
        values[:k] = cols.value[plan.rows[:k]]
        values[k:n] = cols.value[lo: lo + n - k]
    else:
        values[:n] = cols.value[plan.rows]
    adj = back.run(values, timing, anomaly)
    if back.anomaly_found is not None:
        local, slot, partial, grad = back.anomaly_found
        raise_anomaly(t, int(plan.rows[local]), slot, partial, grad)
    inner = back.rows
    leaves = plan.leaves
    if back.reached is not None:
        inner = inner[back.reached[inner]]
        leaves = leaves[back.reached[leaves]]
    at = _graph.as_slice(inner)
    if k >= 0 and isinstance(at, slice) and at.start >= k:
        start = int(plan.rows[at.start])       # consecutive rows of the interval: slices
        t.set_grads(slice(start, start + at.stop - at.start), adj[at])
    else:
        t.set_grads(plan.rows[inner], adj[inner])
    shares = adj[leaves]
    leaf_rows = plan.rows[leaves]
    if t.has_links():
        _leaf_shares(t, dict(zip(leaf_rows.tolist(), shares.tolist())))
    else:
        t.add_grads(leaf_rows, shares)
    if timing is not None:
        timing.lap("leaves")
    return int(inner.size)
