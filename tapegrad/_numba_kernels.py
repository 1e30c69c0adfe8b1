"""The backward's sequential accumulation as numba-compiled loops (``tapegrad[numba]``).

Imported only by :mod:`tapegrad._kernels` when the numba kernels are selected. The
partials still come from the op table's vectorized NumPy rules
(:meth:`tapegrad._plan._Partials.extended`: the values, the constant partials, the
computed ones); these loops read each where it lies, ``p0 = ext[gather[k]]`` and
``p1 = ext[gather[m + k]]``, and replace the level-by-level scatter of
:class:`tapegrad._plan.Backward` with one pass over the rows, from the last to the
first: ``adj[x[k]] += p0 * adj[row k]`` and the same for ``y`` with ``p1`` (when the
gather has a slot-1 block: some slot-1 operand is a row).

Row ``k`` is ``rows[k]``, or ``first + k`` when ``rows`` is empty (the rows are a
range). Rows ascend and every operand row comes before its reader, so each row's adjoint
is complete when it is read. A non-empty ``reach`` (seeded at the output) keeps rows
that do not reach the output out: they neither pass anything on (no ``0 * inf``) nor
mark their operands as reached.

:func:`reverse_sweep` is the entry point. One sample (the eager backward, a
``Function`` gradient at one point) goes through :func:`sweep_one`, which picks one of
four loops before it starts: a loop that tests several run-time flags per row runs at
half the speed (measured: 2.8 against 5.3 ns per row). Batches go through
:func:`sweep_batch`, whose per-row tests are shared by the samples.
"""

from __future__ import annotations

from numba import njit

_IX = ("int32", "int64")      # one compiled version per index width: plans use int32
_ONE = [f"void(int64, {ix}[::1], {ix}[::1], {ix}[::1], {ix}[::1], float64[::1], "
        "float64[::1], boolean[::1])" for ix in _IX]
_BATCH = [f"void(int64, {ix}[::1], {ix}[::1], {ix}[::1], {ix}[::1], float64[:, ::1], "
          "float64[:, ::1], boolean[::1])" for ix in _IX]
_OPTIONS = {"cache": True, "nogil": True}


@njit(_ONE, **_OPTIONS)
def _range(first, rows, x, y, gather, ext, adj, reach):  # pragma: no cover - compiled
    # ``carry``: what row r passes to row r - 1 through operand x (a chain's link), kept
    # in a register instead of stored and loaded again: a chain's adjoints then wait on
    # a multiply and an add per row, not on memory (a 10^6-row chain: 5.5 -> 2.7 ns per
    # row). It is the last term row r - 1 receives (from its lowest reader, and not
    # when y is r - 1 too), so every sum is the plain loop's, in the same order.
    m = x.size
    both = gather.size > m
    carry = 0.0
    for k in range(m - 1, -1, -1):
        r = first + k
        g = adj[r] + carry
        adj[r] = g
        carry = 0.0
        i = x[k]
        linked = i == r - 1
        if both:
            j = y[k]
            linked = linked and j != i
            if linked:
                adj[j] += ext[gather[m + k]] * g
                carry = ext[gather[k]] * g
            else:
                adj[i] += ext[gather[k]] * g
                adj[j] += ext[gather[m + k]] * g
        elif linked:
            carry = ext[gather[k]] * g
        else:
            adj[i] += ext[gather[k]] * g
    if m:
        adj[first - 1] += carry


@njit(_ONE, **_OPTIONS)
def _listed(first, rows, x, y, gather, ext, adj, reach):  # pragma: no cover - compiled
    m = x.size
    both = gather.size > m
    for k in range(m - 1, -1, -1):
        g = adj[rows[k]]
        adj[x[k]] += ext[gather[k]] * g
        if both:
            adj[y[k]] += ext[gather[m + k]] * g


@njit(_ONE, **_OPTIONS)
def _range_masked(first, rows, x, y, gather, ext, adj, reach):  # pragma: no cover
    m = x.size
    both = gather.size > m
    for k in range(m - 1, -1, -1):
        r = first + k
        if reach[r]:
            g = adj[r]
            reach[x[k]] = True
            adj[x[k]] += ext[gather[k]] * g
            if both:
                reach[y[k]] = True
                adj[y[k]] += ext[gather[m + k]] * g


@njit(_ONE, **_OPTIONS)
def _listed_masked(first, rows, x, y, gather, ext, adj, reach):  # pragma: no cover
    m = x.size
    both = gather.size > m
    for k in range(m - 1, -1, -1):
        r = rows[k]
        if reach[r]:
            g = adj[r]
            reach[x[k]] = True
            adj[x[k]] += ext[gather[k]] * g
            if both:
                reach[y[k]] = True
                adj[y[k]] += ext[gather[m + k]] * g


@njit(_ONE, **_OPTIONS)
def sweep_one(first, rows, x, y, gather, ext, adj, reach):  # pragma: no cover - compiled
    """The sweep for one sample: ``ext`` and ``adj`` are 1-d."""
    if reach.size:
        if rows.size:
            _listed_masked(first, rows, x, y, gather, ext, adj, reach)
        else:
            _range_masked(first, rows, x, y, gather, ext, adj, reach)
    elif rows.size:
        _listed(first, rows, x, y, gather, ext, adj, reach)
    else:
        _range(first, rows, x, y, gather, ext, adj, reach)


@njit(_BATCH, **_OPTIONS)
def sweep_batch(first, rows, x, y, gather, ext, adj, reach):  # pragma: no cover - compiled
    """The sweep for a batch: ``ext`` and ``adj`` are ``(entries, samples)``."""
    m = x.size
    both = gather.size > m
    masked = reach.size > 0
    listed = rows.size > 0
    samples = adj.shape[1]
    for k in range(m - 1, -1, -1):
        r = rows[k] if listed else first + k
        i = x[k]
        j = y[k]
        if masked:
            if not reach[r]:
                continue
            reach[i] = True
            if both:
                reach[j] = True
        e0 = gather[k]
        e1 = gather[m + k] if both else e0
        for s in range(samples):
            g = adj[r, s]
            adj[i, s] += ext[e0, s] * g
            if both:
                adj[j, s] += ext[e1, s] * g


def reverse_sweep(first, rows, x, y, gather, ext, adj, reach) -> None:
    """The sweep: ``ext`` is ``(entries, samples)``, ``adj`` ``(plan rows, samples)``,
    both C-contiguous; ``adj`` is updated in place."""
    if adj.shape[1] == 1:
        sweep_one(first, rows, x, y, gather, ext[:, 0], adj[:, 0], reach)
    else:
        sweep_batch(first, rows, x, y, gather, ext, adj, reach)
