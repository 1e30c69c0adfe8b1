"""Graph primitives over a tape's operand columns: the one place for each algorithm.

A tape is a DAG in topological order: row ``r``'s operands ``a0[r]``, ``a1[r]`` are
rows before it, ``-1`` where the slot holds an immediate or is unused. Everything
here works on plain NumPy arrays (operand columns, levels, masks) and is used by the
backward sweep, replay plans, ``Function``, statistics and pictures alike.
"""

from __future__ import annotations

import numpy as np

_FIRST_BLOCK = 4096       # rows examined first when looking for a closed interval
BFS_ROUNDS = 64           # frontier rounds ancestors_bfs tries before giving up


# NumPy 1.25 gave ``ufunc.at`` a fast path: adding into int32 counts in place then beats
# ``np.bincount`` (which copies its input to intp and returns int64 counts) about 2x
_FAST_AT = np.lib.NumpyVersion(np.__version__) >= "1.25.0"


def consumers(a0: np.ndarray, a1: np.ndarray, n: int, nonnegative: bool = False) -> np.ndarray:
    """How many operand slots read each of the rows ``0..n-1`` (negative slots ignored;
    ``nonnegative``: the caller knows there are none and that all are below ``n``,
    which saves passes; the counts are then int32 where they fit)."""
    if nonnegative and _FAST_AT and np.size(a0) + np.size(a1) < 2**31:
        counts = np.zeros(n, np.int32)
        one = np.int32(1)
        for args in (a0, a1):
            np.add.at(counts, args, one)
        return counts
    counts = None
    for args in (a0, a1):
        args = np.asarray(args)
        found = np.bincount(args if nonnegative else args[args >= 0], minlength=n)[:n]
        if counts is None:
            counts = found
        else:
            counts += found
    return counts


def as_slice(idx: np.ndarray) -> np.ndarray | slice:
    """``idx`` (ascending, distinct) as a slice when it is a range of consecutive rows
    (the rows of an interval plan): indexing by it then gives views, no gather."""
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def ancestors(a0: np.ndarray, a1: np.ndarray, level: np.ndarray,
              outputs: np.ndarray) -> np.ndarray:
    """Mask of the rows ``outputs`` depend on (themselves included), exactly.

    Rows are visited one level group at a time from the highest level down, so the
    cost is one vectorized step per level up to the highest output.
    """
    n = level.size
    mark = np.zeros(n + 1, bool)                # last slot: the -1 operand
    outputs = np.asarray(outputs, np.int64)
    if outputs.size == 0:
        return mark[:n]
    mark[outputs] = True
    hi = int(outputs.max()) + 1
    order, starts = level_groups(level[:hi])
    for s, e in zip(starts[:-1].tolist(), starts[1:].tolist()):
        group = order[s:e]
        live = group[mark[group]]
        if live.size:
            mark[a0[live]] = True
            mark[a1[live]] = True
    return mark[:n]


def unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` of a 1-D integer array by a sort: NumPy 2's ``np.unique`` imports
    ``numpy.ma`` on its first call (15-20 ms, paid by the first backward of a process)."""
    a = np.sort(a)
    if a.size < 2:
        return a
    keep = np.empty(a.size, bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def ancestors_bfs(a0: np.ndarray, a1: np.ndarray, root: int,
                  rounds: int = BFS_ROUNDS) -> np.ndarray | None:
    """Ancestor rows of ``root`` (ascending, itself included), found by frontier
    rounds, or ``None`` when the graph is more than ``rounds`` hops deep (the caller
    then uses the closed interval). Cost follows the ancestors, not the tape."""
    seen = np.zeros(root + 1, bool)             # calloc'd: only touched pages cost
    seen[root] = True
    frontier = np.array([root], np.int64)
    visited = [frontier]
    for _ in range(rounds):
        ops = np.concatenate((a0[frontier], a1[frontier])).astype(np.int64)
        ops = ops[ops >= 0]
        ops = ops[~seen[ops]]
        if ops.size == 0:
            return np.sort(np.concatenate(visited))
        ops = unique(ops)
        seen[ops] = True
        visited.append(ops)
        frontier = ops
    return None


def closure_start(low: np.ndarray, root: int) -> int:
    """Start ``lo`` of the smallest interval ``[lo, root]`` closed under non-leaf operands.

    ``low[r]`` is the lowest row among ``r`` and its non-leaf operands. Every
    non-leaf ancestor of ``root`` lies in ``[lo, root]`` (leaf operands may lie anywhere
    before it). ``[L, root]`` is closed when ``low`` is at least ``L`` all over it, so
    ``lo`` is the largest ``L`` whose suffix minimum of ``low`` reaches ``L``. The suffix
    minimum is taken block by block downwards from the root, stopping at the first block
    that holds ``lo``: cost is linear in ``root - lo``.
    """
    running = root
    stop = root + 1
    size = _FIRST_BLOCK
    while True:
        start = max(0, stop - size)
        suffix_min = np.minimum.accumulate(low[start:stop][::-1])   # from stop-1 down
        np.minimum(suffix_min, running, out=suffix_min)
        closed = suffix_min >= np.arange(stop - 1, start - 1, -1, dtype=suffix_min.dtype)
        first = int(closed.argmax())            # stops at the first True
        if closed[first]:
            return stop - 1 - first
        running = int(suffix_min[-1])
        stop = start
        size *= 4


def closure_start_small(low, root: int, limit: int) -> int | None:
    """:func:`closure_start` by a Python scan (``low`` any indexable of ints), for
    small intervals; ``None`` when the interval is longer than ``limit`` rows."""
    running = low[root]
    r = root
    stop = max(root - limit, -1)
    while r > running:
        r -= 1
        if r <= stop:
            return None
        x = low[r]
        if x < running:
            running = x
    return r


def level_groups(keys: np.ndarray, descending: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by ``keys`` (stable) and the start of each run of equal keys,
    with ``len(keys)`` appended: group ``g`` is ``order[starts[g]:starts[g+1]]``."""
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.empty(0, np.int64), np.zeros(1, np.int64)
    top, bottom = int(keys.max()), int(keys.min())
    if top - bottom < 1 << 16:             # 16-bit ranks: NumPy's stable sort is a radix sort
        k = keys.astype(np.int32, copy=False)
        rank = ((top - k) if descending else (k - bottom)).astype(np.uint16)
    else:
        k = keys.astype(np.int64)
        rank = -k if descending else k
    order = np.argsort(rank, kind="stable")
    sk = keys[order]
    starts = np.concatenate(([0], np.flatnonzero(sk[1:] != sk[:-1]) + 1, [sk.size]))
    return order, starts


def forest_roots(parent: np.ndarray) -> np.ndarray:
    """The root of each node of a forest given by ``parent`` (roots point at
    themselves), by pointer jumping: log2(depth) vectorized rounds."""
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def depths(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth (links to the root) and root of each node of a forest given by
    ``parent`` (``-1`` at roots), by pointer jumping."""
    k = parent.size
    jump = parent.astype(np.int64, copy=True)
    depth = (jump >= 0).astype(np.int64)
    root = np.where(jump >= 0, jump, np.arange(k))
    active = np.flatnonzero(jump >= 0)
    while active.size:                  # both updates read the values of the last round
        nxt = jump[active]
        depth[active] += depth[nxt]
        root[active] = root[nxt]
        jump[active] = jump[nxt]
        active = active[jump[active] >= 0]
    return depth, root


def chains(pred: np.ndarray, min_length: int = 2) -> list[np.ndarray]:
    """Paths through ``pred`` links (``pred[i]`` is ``i``'s predecessor on its path or
    ``-1``), each bottom to top, of at least ``min_length`` nodes. Every node has at
    most one successor."""
    k = pred.size
    on = np.flatnonzero(pred >= 0)
    if on.size == 0:
        return []
    in_path = np.zeros(k, bool)
    in_path[on] = True
    in_path[pred[on]] = True
    members = np.flatnonzero(in_path)
    depth, bottom = depths(pred)
    order = members[np.lexsort((depth[members], bottom[members]))]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(bottom[order])) + 1, [order.size]))
    sizes = np.diff(starts)
    long = np.flatnonzero(sizes >= max(min_length, 2))
    if long.size == 0:
        return []
    if long.size == sizes.size:
        return pieces(order, starts)
    keep = np.repeat(np.isin(np.arange(sizes.size), long), sizes)
    return pieces(order[keep], np.concatenate(([0], np.cumsum(sizes[long]))))


def pieces(a: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    """Views ``a[starts[i]:starts[i + 1]]`` (``starts`` ascending, from 0 to ``a.size``):
    ``np.split`` without its per-piece overhead (thousands of chains: 9 ms -> 1 ms)."""
    bounds = starts.tolist()
    return [a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def runs(pred: np.ndarray, min_length: int) -> list[np.ndarray]:
    """The paths of :func:`chains` whose nodes come one after another in index order
    (no other path member in between), of at least ``min_length`` nodes: linear time,
    no pointer jumping. Recurrences (``x = x * a + b``) and sum chains are such paths;
    paths interleaved with others come apart and are left out."""
    member = np.zeros(pred.size + 1, bool)      # last slot: what -1 marks
    member[pred] = True
    member = member[:-1]
    member |= pred >= 0
    count = np.count_nonzero(member)
    if count < 2:
        return []
    link = np.zeros(count + 1, np.int8)
    first = int(member.argmax())
    last = member.size - 1 - int(member[::-1].argmax())
    if last - first + 1 == count:
        # the members are the range first..last (a recurrence): slices, no gather
        np.equal(pred[first + 1: last + 1], np.arange(first, last, dtype=pred.dtype),
                 out=link[1:-1])
        members = None
    else:
        members = np.flatnonzero(member)
        np.equal(pred[members[1:]], members[:-1], out=link[1:-1])
    step = np.diff(link)
    starts = np.flatnonzero(step == 1)           # link k joins members k and k + 1
    stops = np.flatnonzero(step == -1)
    long = stops - starts + 1 >= min_length
    pairs = zip(starts[long].tolist(), stops[long].tolist())
    if members is None:
        return [np.arange(first + a, first + b + 1) for a, b in pairs]
    return [members[a: b + 1] for a, b in pairs]


def longest_chain(a0: np.ndarray, a1: np.ndarray, n: int) -> int:
    """Rows in the longest path where each row is the only operand use of the one before
    (0 for an empty tape)."""
    if n == 0:
        return 0
    fan = consumers(a0, a1, n)
    parent = np.full(n, -1, np.int64)
    rows = np.arange(n, dtype=np.int64)
    for args in (a0, a1):
        a = np.asarray(args, np.int64)
        single = a >= 0
        single[single] = fan[a[single]] == 1
        parent[a[single]] = rows[single]
    depth, _ = depths(parent)
    return int(depth.max()) + 1


def retained(a0: np.ndarray, a1: np.ndarray, level: np.ndarray, low: np.ndarray,
             live: np.ndarray) -> np.ndarray:
    """Mask of the rows that the rows ``live`` need, conservatively: themselves, the
    closed interval (:func:`closure_start`) of each live non-leaf row and the operands
    of every kept row (leaves before an interval)."""
    n = level.size
    keep = np.zeros(n, bool)
    if live.size == 0:
        return keep
    keep[live] = True
    inner = np.unique(live[level[live] > 0])[::-1]
    lows = memoryview(np.ascontiguousarray(low))
    covered = n
    for r in inner.tolist():
        if r >= covered:        # inside a closed interval: so is its own
            continue
        start = closure_start_small(lows, r, 64)
        covered = closure_start(low, r) if start is None else start
        keep[covered: r + 1] = True
    for args in (a0[keep], a1[keep]):
        keep[args[args >= 0]] = True
    return keep


def descendants(a0: np.ndarray, a1: np.ndarray, level: np.ndarray,
                sources: np.ndarray, upto: int) -> np.ndarray:
    """Mask of the rows below ``upto`` that depend on any of ``sources`` (themselves
    included): one vectorized step per level, lowest first."""
    n = min(upto, level.size)
    mark = np.zeros(n + 1, bool)              # last slot: the -1 operand, never marked
    sources = np.asarray(sources, np.int64)
    mark[sources[sources < n]] = True
    order, starts = level_groups(level[:n], descending=False)
    a0, a1 = a0[:n], a1[:n]
    for s, e in zip(starts[:-1].tolist(), starts[1:].tolist()):
        group = order[s:e]
        hit = group[mark[a0[group]] | mark[a1[group]]]
        mark[hit] = True
    return mark[:n]


def dependency_bits(a0: np.ndarray, a1: np.ndarray, level: np.ndarray,
                    sources: np.ndarray) -> np.ndarray:
    """Which of ``sources`` each row depends on, as packed bit rows.

    Returns an array of shape ``(n + 1, ceil(len(sources) / 8))`` of ``uint8`` (bit ``j`` in
    the order of :func:`numpy.packbits`, so ``np.unpackbits(bits, axis=1,
    count=len(sources))`` gives a boolean matrix): row ``sources[j]`` has bit ``j``, and
    every row with operands the union of its operands' bits, one vectorized step per
    level, lowest first. Pass ``-1`` operands to cut an edge (an op whose partials are
    structurally zero). The extra last row (what index ``-1`` reads) is all zeros.
    """
    n = level.size
    k = len(sources)
    bits = np.zeros((n + 1, max(1, (k + 7) // 8)), np.uint8)     # last row: the -1 operand
    j = np.arange(k)
    np.bitwise_or.at(bits, (np.asarray(sources, np.int64), j // 8),
                     (1 << (7 - j % 8)).astype(np.uint8))
    has = (a0 >= 0) | (a1 >= 0)
    rows = np.flatnonzero(has & (level > 0))
    order, starts = level_groups(level[rows], descending=False)
    rows = rows[order]
    for s, e in zip(starts[:-1].tolist(), starts[1:].tolist()):
        g = rows[s:e]
        bits[g] = bits[a0[g]] | bits[a1[g]]
    return bits


def bit_pairs(left: np.ndarray, right: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(i, j)`` of the union over ``k`` of the products ``left[k] x right[k]``
    of packed bit rows (:func:`dependency_bits`), without repeats, sorted."""
    if left.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    both = np.ascontiguousarray(np.concatenate((left, right), axis=1))
    w = left.shape[1]
    distinct = {}
    for k, key in enumerate(map(bytes, both)):      # hashing beats a sort of wide rows
        distinct.setdefault(key, k)
    codes = []
    for row in both[list(distinct.values())]:
        i = np.flatnonzero(np.unpackbits(row[:w], count=count))
        j = np.flatnonzero(np.unpackbits(row[w:], count=count))
        if i.size and j.size:
            codes.append((i[:, None] * count + j[None, :]).ravel())
    if not codes:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    flat = np.unique(np.concatenate(codes))
    return flat // count, flat % count


def colour_columns(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Greedy distance-2 colouring of the columns of a sparsity pattern.

    Columns ``j`` and ``k`` get different colours when some row has entries in both
    (so a product of the matrix with the sum of one colour's unit vectors holds each
    of their entries alone in its row). ``rows``, ``cols``: coordinates of the
    entries. Columns are coloured in order with the smallest colour their
    neighbours do not use; returns the colour of each column (``0..C-1``).
    """
    m, n = shape
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    by_col = np.argsort(cols, kind="stable")
    col_start = np.searchsorted(cols[by_col], np.arange(n + 1))
    col_rows = rows[by_col]
    by_row = np.argsort(rows, kind="stable")
    row_start = np.searchsorted(rows[by_row], np.arange(m + 1))
    row_cols = cols[by_row]
    colour = np.full(n, -1, np.int64)
    col_start_l, row_start_l = col_start.tolist(), row_start.tolist()
    for j in range(n):
        rs = col_rows[col_start_l[j]: col_start_l[j + 1]]
        if rs.size == 0:
            colour[j] = 0
            continue
        neighbours = np.concatenate([row_cols[row_start_l[i]: row_start_l[i + 1]]
                                     for i in rs.tolist()])
        used = colour[neighbours]
        used = used[used >= 0]
        if used.size == 0:
            colour[j] = 0
            continue
        taken = np.zeros(int(used.max()) + 2, bool)
        taken[used] = True
        colour[j] = int(np.argmin(taken))
    return colour


def jump_rounds(parent: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The rounds of pointer jumping over a forest given by ``parent`` (``parent[i]``
    in ``0..k-1``, or ``k`` at a root's child: a terminal node), as ``(nodes, jump)``
    index pairs: after ``w[nodes] *= w[jump]`` for every round in turn (``w[k] == 1``),
    ``w[i]`` is the product of the weights on the path from ``i`` to the terminal.
    ``log2`` of the depth rounds; each lists only the nodes not yet done."""
    k = parent.size
    jump = np.append(np.asarray(parent, np.int64), k)
    out = []
    nodes = np.flatnonzero(jump[:k] != k)
    while nodes.size:
        out.append((nodes, jump[nodes]))
        jump[nodes] = jump[jump[nodes]]          # both sides read the last round's jump
        nodes = nodes[jump[nodes] != k]
    return out


def dag_levels(tail: np.ndarray, head: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """Longest-path level of each of ``n`` nodes over edges ``tail -> head``: 0 for a
    node without incoming edges, else 1 + the highest level of its tails. ``key`` is a
    topological key (every tail's key below its head's); heads are done one key group
    at a time, lowest first."""
    level = np.zeros(n, np.int64)
    if tail.size == 0:
        return level
    order, starts = level_groups(key[head], descending=False)
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
        e = order[a:b]
        np.maximum.at(level, head[e], level[tail[e]] + 1)
    return level
