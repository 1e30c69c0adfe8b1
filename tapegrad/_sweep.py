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

from typing import NamedTuple

import numpy as np

from .ops import OPS

_FIRST_BLOCK = 4096   # rows examined first when looking for the closed interval
_NARROW = 16          # levels with at most this many rows are candidates for folding
_MIN_RUN = 8          # shorter chains stay in the level groups

_DIFFERENTIABLE = np.array([op.partials is not None for op in OPS])


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
    among a row and its non-leaf operands) is at least ``L`` over it, so ``lo`` is the
    largest ``L`` whose suffix minimum of ``low`` reaches ``L``. Cost is linear in
    ``root - lo``.
    """
    hi = root + 1
    size = _FIRST_BLOCK
    while True:
        start = max(0, hi - size)
        suffix_min = np.minimum.accumulate(cols.low[start:hi][::-1])[::-1]
        closed = np.flatnonzero(suffix_min >= np.arange(start, hi))
        if closed.size:
            return start + int(closed[-1])
        size *= 8


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


def local_partials(cols: Columns, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``d row / d arg0`` and ``d row / d arg1`` for each of ``rows`` (0 where unused)."""
    op = cols.op[rows]
    p0 = np.zeros(rows.size)
    p1 = np.zeros(rows.size)
    present = np.flatnonzero(np.bincount(op, minlength=len(OPS)))
    with np.errstate(all="ignore"):
        for code in present.tolist():
            rule = OPS[code]
            if rule.partials is None:
                continue
            idx = np.flatnonzero(op == code)
            sel = rows[idx]
            x, y = operand_values(cols, sel, rule.arity)
            d0, d1 = rule.partials(x, y, cols.value[sel])
            p0[idx] = d0
            if rule.arity == 2:
                p1[idx] = d1
    return p0, p1


class _Chain(NamedTuple):
    """A folded chain: rows where each is the only consumer of the row before it."""

    rows: np.ndarray    # absolute rows, bottom to top
    links: np.ndarray   # partial of each row w.r.t. the one before it, top row first
    cons: np.ndarray    # side edges (operands other than the predecessor): consumer rows,
    tgt: np.ndarray     # ... operand rows,
    part: np.ndarray    # ... and partials


def _find_chains(pos: np.ndarray, level: np.ndarray, fan: np.ndarray,
                 a0: np.ndarray, a1: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chains worth folding among ``pos`` (interval positions of non-leaf rows).

    Candidates are the rows of narrow levels in row order; consecutive candidates are
    linked when the earlier one has a single consumer, the later one. ``level``,
    ``fan`` and ``a0``/``a1`` (operands as interval positions, -1 outside) are indexed
    by interval position. Returns ``(rows, on0)`` per chain: positions bottom to top,
    and for ``rows[1:]`` whether the predecessor sits in operand slot 0.
    """
    width = np.bincount(level[pos])
    cand = pos[width[level[pos]] <= _NARROW]
    if cand.size < _MIN_RUN:
        return []
    prev, cur = cand[:-1], cand[1:]
    on0 = a0[cur] == prev
    link = (fan[prev] == 1) & (on0 | (a1[cur] == prev))
    step = np.diff(link.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(step == 1)
    stops = np.flatnonzero(step == -1)
    long = stops - starts + 1 >= _MIN_RUN
    return [(cand[s: e + 1], on0[s:e]) for s, e in zip(starts[long].tolist(),
                                                        stops[long].tolist())]


def _fold(cols: Columns, lo: int, found: list[tuple[np.ndarray, np.ndarray]]) -> list[_Chain]:
    """Partials, link partials and side edges of the chains ``found`` (positions)."""
    rows = np.concatenate([r for r, _ in found]) + lo
    p0, p1 = local_partials(cols, rows)
    chains = []
    start = 0
    for pos, on0 in found:
        stop = start + pos.size
        r = rows[start:stop]
        q0, q1 = p0[start:stop], p1[start:stop]
        links = np.where(on0, q0[1:], q1[1:])[::-1]
        # side edges: every operand slot except the predecessor's
        side0 = np.ones(pos.size, bool)
        side0[1:] = ~on0
        side1 = np.ones(pos.size, bool)
        side1[1:] = on0
        t0 = cols.a0[r]
        t1 = cols.a1[r]
        side0 &= t0 >= 0
        side1 &= t1 >= 0
        chains.append(_Chain(
            rows=r, links=links,
            cons=np.concatenate((r[side0], r[side1])),
            tgt=np.concatenate((t0[side0], t1[side1])),
            part=np.concatenate((q0[side0], q1[side1])),
        ))
        start = stop
    return chains


def reverse_sweep(cols: Columns, root: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjoints of every row that reaches ``root`` (seeded with 1 at ``root``).

    Returns ``(adj, inner_rows, leaf_rows)``: ``adj`` is indexed by row (length
    ``root + 1``); ``inner_rows`` are the non-leaf ancestors (root included) and
    ``leaf_rows`` the leaf ancestors, each row once, sorted.
    """
    hi = root + 1
    adj = np.zeros(hi)
    adj[root] = 1.0
    if cols.level[root] == 0:
        return adj, np.empty(0, np.int64), np.array([root])
    lo = closure_start(cols, root)
    m = hi - lo
    level = cols.level[lo:hi]
    inner = (level > 0) & _DIFFERENTIABLE[cols.op[lo:hi]]
    pos = np.flatnonzero(inner)                 # interval positions of non-leaf rows

    # operands as interval positions (-1: immediate, unused, or a leaf before lo)
    a0 = cols.a0[lo:hi] - lo
    a1 = cols.a1[lo:hi] - lo
    a0[~inner | (a0 < 0)] = -1
    a1[~inner | (a1 < 0)] = -1
    fan = np.bincount(a0[a0 >= 0], minlength=m) + np.bincount(a1[a1 >= 0], minlength=m)
    dangling = inner & (fan == 0)
    dangling[m - 1] = False
    del a0, a1

    found = _find_chains(pos, level, fan, cols.a0[lo:hi] - lo, cols.a1[lo:hi] - lo)
    chains = _fold(cols, lo, found) if found else []
    if found:
        in_chain = np.zeros(m, bool)
        for c, _ in found:
            in_chain[c] = True
        pos = pos[~in_chain[pos]]

    # the other rows, highest level first
    keys = level[pos]
    top = int(keys.max()) if keys.size else 0
    order = np.argsort((top - keys).astype(np.uint16 if top < 1 << 16 else np.int64),
                       kind="stable")
    srows = pos[order] + lo
    skeys = keys[order]
    chains_at: dict[int, list[_Chain]] = {}
    for chain in chains:
        chains_at.setdefault(int(cols.level[chain.rows[-1]]), []).append(chain)
    distinct = skeys[np.flatnonzero(np.diff(skeys, prepend=top + 1))]
    group_keys = sorted(set(distinct.tolist()) | set(chains_at), reverse=True)
    bounds = np.searchsorted(-skeys, -np.array(group_keys + [-1]), side="left")
    p0, p1 = local_partials(cols, srows)

    # per operand slot: consumer rows, operand rows and partials, in processing order
    slots = []
    for args, part in ((cols.a0, p0), (cols.a1, p1)):
        t = args[srows]
        use = t >= 0
        at = np.concatenate(([0], np.cumsum(use)))[bounds].tolist()
        slots.append((srows[use], t[use], part[use], at))

    reach = None
    if dangling.any():   # some rows do not reach the root: carry an ancestor mask
        reach = np.zeros(hi, bool)
        reach[root] = True

    def scatter(c: np.ndarray, t: np.ndarray, p: np.ndarray) -> None:
        w = p * adj[c]
        if reach is not None:
            live = reach[c]
            w[~live] = 0.0
            reach[t[live]] = True
        np.add.at(adj, t, w)

    with np.errstate(all="ignore"):
        for g, k in enumerate(group_keys):
            for chain in chains_at.get(k, ()):
                seq = np.empty(chain.links.size + 1)
                seq[0] = adj[chain.rows[-1]]
                seq[1:] = chain.links
                adj[chain.rows] = np.cumprod(seq)[::-1]
                if reach is not None:
                    reach[chain.rows] = reach[chain.rows[-1]]
                scatter(chain.cons, chain.tgt, chain.part)
            for cons, tgt, part, at in slots:
                s, e = at[g], at[g + 1]
                if s < e:
                    scatter(cons[s:e], tgt[s:e], part[s:e])

    edges = [(cons, tgt) for cons, tgt, _, _ in slots] + [(c.cons, c.tgt) for c in chains]
    inner_rows = np.concatenate([srows] + [c.rows for c in chains])
    if reach is not None:
        inner_rows = inner_rows[reach[inner_rows]]
    leaf_parts = []
    for cons, tgt in edges:
        ok = cols.level[tgt] == 0
        if reach is not None:
            ok &= reach[cons]
        leaf_parts.append(tgt[ok])
    leaf_tgt = np.concatenate(leaf_parts)
    if leaf_tgt.size:
        base = int(leaf_tgt.min())
        seen = np.zeros(hi - base, bool)
        seen[leaf_tgt - base] = True
        leaf_rows = np.flatnonzero(seen) + base
    else:
        leaf_rows = np.empty(0, np.int64)
    return adj, inner_rows, leaf_rows


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
