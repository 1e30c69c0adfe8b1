"""Vectorized passes over the tape's columns: the reverse sweep and reachability.

Everything here works on NumPy arrays handed over by the tape (:class:`Columns`);
nothing here owns or grows buffers.

The reverse sweep (``docs/design.md`` has the picture):

1. **Interval.** Only rows in ``[lo, root]`` can be non-leaf ancestors of ``root``,
   where ``lo`` starts the smallest interval ending at ``root`` that is closed under
   non-leaf operands (a suffix minimum, block by block).
2. **Local partials.** One vectorized call per opcode present (:mod:`tapegrad.ops`).
3. **Chains.** Levels with few rows cost a fixed NumPy overhead each, and deep
   graphs are mostly such levels: recurrences (``x = x * a + b``) and micrograd's
   ``sum()`` chains. Among the rows of narrow levels, taken in row order, a run of
   rows where each is the only consumer of the one before is folded: its adjoints
   are one reversed cumulative product of the link partials.
4. **Level groups.** The other rows are sorted by level (a folded run counts at the
   level of its top) and processed from the highest level down. Within a level every
   consumer's adjoint is final, so one gather × partial → ``np.add.at`` per operand
   slot handles the whole level; ``add.at`` accumulates repeated operands (``a * a``,
   a weight used by every sample).
5. **Ancestors only.** If some row of the interval does not reach the root, an
   ancestor mask travels with the adjoints so that such rows neither receive a
   gradient nor pass on ``0 * inf = nan``.
"""

from __future__ import annotations

from time import perf_counter
from typing import NamedTuple

import numpy as np

from .ops import OPS

_FIRST_BLOCK = 4096   # rows examined first when looking for the closed interval
_NARROW = 16          # levels with at most this many rows are candidates for folding
_MIN_RUN = 8          # shorter chains stay in the level groups

_DIFFERENTIABLE = np.array([op.partials is not None for op in OPS])


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


class Columns(NamedTuple):
    """Read-only views of a tape's rows (all of the same length)."""

    op: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    const: np.ndarray
    value: np.ndarray
    level: np.ndarray
    low: np.ndarray
    grad: np.ndarray


def closure_start(cols: Columns, root: int) -> int:
    """Start ``lo`` of the smallest interval ``[lo, root]`` closed under non-leaf operands.

    Every non-leaf ancestor of ``root`` lies in that interval (leaf operands may lie
    anywhere before it). ``[L, root]`` is closed when the ``low`` column (lowest row
    among a row and its non-leaf operands) is at least ``L`` all over it, so ``lo`` is
    the largest ``L`` whose suffix minimum of ``low`` reaches ``L``. The suffix minimum
    is taken block by block downwards from the root, stopping at the first block that
    holds ``lo``: cost is linear in ``root - lo``.
    """
    running = root
    stop = root + 1
    size = _FIRST_BLOCK
    while True:
        start = max(0, stop - size)
        suffix_min = np.minimum.accumulate(cols.low[start:stop][::-1])   # from stop-1 down
        np.minimum(suffix_min, running, out=suffix_min)
        closed = np.flatnonzero(suffix_min >= np.arange(stop - 1, start - 1, -1))
        if closed.size:
            return stop - 1 - int(closed[0])
        running = int(suffix_min[-1])
        stop = start
        size *= 4


def operand_values(cols: Columns, rows: np.ndarray, arity: int) -> tuple[np.ndarray, object]:
    """``(x, y)`` operand values of ``rows`` (all of one op), immediates filled in."""
    i = cols.a0[rows]
    x = cols.value[i]
    if arity == 1:
        return x, 0.0
    j = cols.a1[rows]
    y = cols.value[j]
    for idx, side in ((np.flatnonzero(i < 0), x), (np.flatnonzero(j < 0), y)):
        if idx.size:
            side[idx] = cols.const[rows[idx]]
    return x, y


def local_partials(cols: Columns, rows: np.ndarray,
                   timing: Timing | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``d row / d arg0`` and ``d row / d arg1`` for each of ``rows`` (0 where unused)."""
    op = cols.op[rows]
    p0 = np.zeros(rows.size)
    p1 = np.zeros(rows.size)
    if rows.size == 0:
        return p0, p1
    by_op = np.argsort(op, kind="stable")
    sorted_op = op[by_op]
    cut = (np.flatnonzero(sorted_op[1:] != sorted_op[:-1]) + 1).tolist()
    with np.errstate(all="ignore"):
        for s, e in zip([0] + cut, cut + [rows.size]):
            rule = OPS[sorted_op[s]]
            if rule.partials is None:
                continue
            start = perf_counter() if timing is not None else 0.0
            idx = by_op[s:e]
            sel = rows[idx]
            x = y = out = None
            if "x" in rule.reads or "y" in rule.reads:
                x, y = operand_values(cols, sel, rule.arity)
            if "o" in rule.reads:
                out = cols.value[sel]
            d0, d1 = rule.partials(x, y, out)
            p0[idx] = d0
            if rule.arity == 2:
                p1[idx] = d1
            if timing is not None:
                timing.op(rule.name, e - s, perf_counter() - start)
    return p0, p1


class _Chain(NamedTuple):
    """A folded chain: rows where each is the only consumer of the row before it."""

    rows: np.ndarray    # absolute rows, bottom to top
    links: np.ndarray   # partial of each row w.r.t. the one before it, top row first
    cons: np.ndarray    # side edges (operands other than the predecessor): consumer rows,
    tgt: np.ndarray     # ... operand rows,
    part: np.ndarray    # ... and partials


def _consumer_counts(rows: np.ndarray, a0: np.ndarray, a1: np.ndarray, lo: int,
                     m: int) -> np.ndarray:
    """Number of consumers of each interval position in the mask ``rows`` (0 elsewhere).

    ``a0``/``a1`` are the interval's operand columns (absolute rows, -1 for none).
    """
    counts = np.zeros(m, np.int64)
    for args in (a0, a1):
        local = args.astype(np.int64) - lo
        local = local[(local >= 0)]
        counts += np.bincount(local[rows[local]], minlength=m)
    return counts


def _find_chains(cand: np.ndarray, fan: np.ndarray, a0: np.ndarray, a1: np.ndarray,
                 lo: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chains worth folding among ``cand`` (interval positions, ascending).

    Consecutive candidates are linked when the earlier one has a single consumer, the
    later one. ``fan`` (consumers) is indexed by interval position; ``a0``/``a1`` are
    the interval's operand columns (absolute rows). Returns ``(positions, on0)`` per
    chain: bottom to top, and for each row but the first whether its predecessor is
    operand 0.
    """
    prev, cur = cand[:-1], cand[1:]
    on0 = a0[cur] == prev + lo
    link = (fan[prev] == 1) & (on0 | (a1[cur] == prev + lo))
    edge = np.zeros(link.size + 2, np.int8)
    edge[1:-1] = link
    step = edge[1:] - edge[:-1]
    starts = np.flatnonzero(step == 1)
    stops = np.flatnonzero(step == -1)
    long = stops - starts + 1 >= _MIN_RUN
    return [(cand[s: e + 1], on0[s:e]) for s, e in zip(starts[long].tolist(),
                                                        stops[long].tolist())]


def _chain(cols: Columns, rows: np.ndarray, on0: np.ndarray,
           timing: Timing | None = None) -> _Chain:
    """A folded chain from its rows (absolute, bottom to top)."""
    q0, q1 = local_partials(cols, rows, timing)
    a, b = cols.a0[rows], cols.a1[rows]
    side0 = a >= 0                  # every operand slot except the predecessor's
    side0[1:] &= ~on0
    side1 = b >= 0
    side1[1:] &= on0
    return _Chain(
        rows=rows,
        links=np.where(on0, q0[1:], q1[1:])[::-1],
        cons=np.concatenate((rows[side0], rows[side1])),
        tgt=np.concatenate((a[side0], b[side1])),
        part=np.concatenate((q0[side0], q1[side1])),
    )


class Sweep(NamedTuple):
    """Result of :func:`reverse_sweep`."""

    adj: np.ndarray       # adjoint of every row up to the root, then a sink slot
    lo: int               # start of the root's closed interval
    inner: np.ndarray     # mask over rows lo..root: non-leaf ancestors
    leaves: np.ndarray    # leaf rows whose adjoint to add, sorted, each once


def reverse_sweep(cols: Columns, root: int, timing: Timing | None = None) -> Sweep:
    """Adjoints of every row that reaches ``root`` (seeded with 1 at ``root``).

    ``adj`` and ``reach`` carry one slot past the root: operand ``-1`` (an immediate
    or an unused slot) indexes it, so edges never need masking; it collects garbage.
    ``timing``, when given, receives the time per phase, per op and per level group.
    """
    hi = root + 1
    adj = np.zeros(hi + 1)
    adj[root] = 1.0
    if cols.level[root] == 0:
        return Sweep(adj, root, np.zeros(1, bool), np.array([root]))
    lo = closure_start(cols, root)
    if timing is not None:
        timing.lap("interval")
    m = hi - lo
    level = cols.level[lo:hi]
    op = cols.op[lo:hi]
    a0 = cols.a0[lo:hi]                         # leaves hold -1 in both operand slots
    a1 = cols.a1[lo:hi]
    inner = level > 0
    if not _DIFFERENTIABLE[op].all():           # rows without partials: no edges
        inner &= _DIFFERENTIABLE[op]
        a0 = np.where(inner, a0, -1)
        a1 = np.where(inner, a1, -1)

    # rows with no consumer in the interval (besides the root) do not reach the root
    consumed = np.zeros(hi + 1, bool)           # slot hi (index -1): the "no operand" mark
    consumed[a0] = True
    consumed[a1] = True
    dangling = inner & ~consumed[lo:hi]
    dangling[m - 1] = False
    reach = None
    if dangling.any():   # some rows do not reach the root: carry an ancestor mask
        reach = np.zeros(hi + 1, bool)
        reach[root] = True

    # rows of narrow levels may form chains worth folding; other rows go level by level
    width = np.bincount(level)
    narrow = width <= _NARROW
    narrow[0] = False
    chains_at: dict[int, list[_Chain]] = {}
    keep = inner
    if narrow.any():
        is_cand = narrow[level] & inner
        cand = np.flatnonzero(is_cand)
        if cand.size >= _MIN_RUN:
            fan = _consumer_counts(is_cand, a0, a1, lo, m)
            keep = inner.copy()
            for cpos, on0 in _find_chains(cand, fan, a0, a1, lo):
                keep[cpos] = False
                chain = _chain(cols, cpos + lo, on0, timing)
                chains_at.setdefault(int(level[cpos[-1]]), []).append(chain)
    if timing is not None:
        timing.lap("chains")
    pos = np.flatnonzero(keep)

    # level groups, highest first: rows sorted by level; each group is a slice
    keys = level[pos]
    top = int(keys.max()) if keys.size else 0
    order = pos[np.argsort((top - keys).astype(np.uint16 if top < 1 << 16 else np.int64),
                           kind="stable")]
    skeys = level[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(skeys)) + 1))
    group_keys = skeys[starts].tolist() if skeys.size else []
    groups = dict(zip(group_keys, zip(starts.tolist(),
                                      np.append(starts[1:], skeys.size).tolist())))
    rows = order + lo
    if timing is not None:
        timing.lap("schedule")
    p0, p1 = local_partials(cols, rows, timing)
    slots = ((a0[order].astype(np.int64), p0), (a1[order].astype(np.int64), p1))
    if timing is not None:
        timing.lap("partials")

    with np.errstate(all="ignore"):
        for k in sorted(set(group_keys) | set(chains_at), reverse=True):
            start = perf_counter() if timing is not None else 0.0
            for chain in chains_at.get(k, ()):
                seq = np.empty(chain.links.size + 1)
                seq[0] = adj[chain.rows[-1]]
                seq[1:] = chain.links
                adj[chain.rows] = np.cumprod(seq)[::-1]
                if reach is not None:
                    reach[chain.rows] = reach[chain.rows[-1]]
                _scatter(adj, reach, chain.cons, chain.tgt, chain.part)
            if k in groups:
                s, e = groups[k]
                c = rows[s:e]
                g = adj[c]
                if reach is not None:
                    live = reach[c]
                    g[~live] = 0.0
                for tgt, part in slots:
                    t = tgt[s:e]
                    w = part[s:e] * g
                    if reach is not None:
                        w[~live] = 0.0
                        reach[t[live]] = True
                    np.add.at(adj, t, w)
            if timing is not None:
                size = sum(c.rows.size for c in chains_at.get(k, ()))
                if k in groups:
                    size += groups[k][1] - groups[k][0]
                timing.groups.append((k, size, perf_counter() - start))
    if timing is not None:
        timing.lap("levels")

    if reach is not None:
        inner &= reach[lo:hi]
    # leaf ancestors: the leaves the interval's rows read (rows before lo are leaves, by
    # the closure) and the leaves inside it; for one that does not reach the root the
    # adjoint added is zero, which changes nothing
    leaves = np.concatenate([np.flatnonzero(consumed[:lo]), np.flatnonzero(level == 0) + lo])
    if timing is not None:
        timing.lap("leaves")
    return Sweep(adj, lo, inner, leaves)


def backward_anomaly(cols: Columns, root: int,
                     sweep: Sweep) -> tuple[int, int, float, float] | None:
    """The first non-leaf ancestor, in sweep order (highest level first), whose finite
    gradient times a local partial gives nan or inf: (row, slot, partial, gradient)."""
    rows = np.flatnonzero(sweep.inner) + sweep.lo
    if rows.size == 0:
        return None
    g = sweep.adj[rows]
    p0, p1 = local_partials(cols, rows)
    with np.errstate(all="ignore"):
        bad0 = np.isfinite(g) & ~np.isfinite(p0 * g) & (cols.a0[rows] >= 0)
        bad1 = np.isfinite(g) & ~np.isfinite(p1 * g) & (cols.a1[rows] >= 0)
    bad = np.flatnonzero(bad0 | bad1)
    if bad.size == 0:
        return None
    first = bad[np.lexsort((rows[bad], cols.level[rows[bad]]))[-1]]
    slot = 0 if bad0[first] else 1
    partial = (p0 if slot == 0 else p1)[first]
    return int(rows[first]), slot, float(partial), float(g[first])


def _scatter(adj: np.ndarray, reach: np.ndarray | None, cons: np.ndarray, tgt: np.ndarray,
             part: np.ndarray) -> None:
    """``adj[tgt] += part * adj[cons]`` with repeated targets accumulated."""
    w = part * adj[cons]
    if reach is not None:
        live = reach[cons]
        w[~live] = 0.0
        reach[tgt[live]] = True
    np.add.at(adj, tgt, w)


def reachable(cols: Columns, live: np.ndarray) -> np.ndarray:
    """Mask of rows that some row in ``live`` can reach (itself included), conservatively.

    Each live non-leaf row keeps its whole closed interval (see :func:`closure_start`),
    plus the leaves those intervals use.
    """
    n = cols.op.size
    keep = np.zeros(n, bool)
    if live.size == 0:
        return keep
    keep[live] = True
    inner = np.unique(live[cols.level[live] > 0])[::-1]
    covered = n
    for r in inner.tolist():
        if r >= covered:
            continue
        covered = closure_start(cols, r)
        keep[covered: r + 1] = True
    for args in (cols.a0[keep], cols.a1[keep]):
        keep[args[args >= 0]] = True
    return keep
