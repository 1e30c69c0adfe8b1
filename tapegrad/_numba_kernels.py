"""The backward's sequential accumulation as a numba-compiled loop (``tapegrad[numba]``).

Imported only by :mod:`tapegrad._kernels` when the numba kernels are selected. The
partials still come from the op table's vectorized NumPy rules; this loop only replaces
the level-by-level scatter of :class:`tapegrad._plan.Backward` with one pass over the
rows, from the last to the first.
"""

from __future__ import annotations

from numba import njit

# one compiled version per index width (plans use int32 where rows fit): no copies
_SIGNATURES = [
    f"void(int64, {ix}[::1], {ix}[::1], {ix}[::1], float64[:, :, ::1], float64[:, ::1], "
    "boolean[::1])"
    for ix in ("int32", "int64")
]


@njit(_SIGNATURES, cache=True, nogil=True)
def reverse_sweep(first, rows, x, y, part, adj, reach):  # pragma: no cover - compiled
    """``adj[x[k]] += part[0, k] * adj[row k]`` and the same for ``y`` with
    ``part[1, k]`` (when ``part`` has a slot-1 block), for ``k`` from the last row down.

    Row ``k`` is ``rows[k]``, or ``first + k`` when ``rows`` is empty (the rows are a
    range). Rows ascend and every operand row comes before its reader, so each row's
    adjoint is complete when it is read. ``adj`` is ``(rows, samples)``. A non-empty
    ``reach`` (seeded at the output) keeps rows that do not reach the output out: they
    neither pass anything on (no ``0 * inf``) nor mark their operands as reached.
    """
    both = part.shape[0] == 2
    masked = reach.size > 0
    listed = rows.size > 0
    samples = adj.shape[1]
    for k in range(x.size - 1, -1, -1):
        r = rows[k] if listed else first + k
        i = x[k]
        j = y[k]
        if masked:
            if not reach[r]:
                continue
            reach[i] = True
            if both:
                reach[j] = True
        for s in range(samples):
            g = adj[r, s]
            adj[i, s] += part[0, k, s] * g
            if both:
                adj[j, s] += part[1, k, s] * g
