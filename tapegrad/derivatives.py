"""Derivatives as recorded programs: :func:`grad`, and copies of recorded rows.

    x, y = Value(1.0), Value(2.0)
    f = x * x * y + y.sin()
    gx, gy = tapegrad.grad(f, [x, y])        # Values, recorded on f's tape
    (gxx, gxy) = tapegrad.grad(gx, [x, y])   # second derivatives, mixed ones included

The reverse sweep is recorded with each op's Value-level partials (``grad_rule`` in
the op table, :mod:`tapegrad.ops`), so the gradients are ordinary Values: they can be
differentiated again, replayed, or made into a :class:`tapegrad.Function`.
``Value.backward()`` is unchanged (numbers, not rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _graph
from .engine import Value
from .ops import OPS
from .tape import Tape

__all__ = ["grad"]


def _scale(adj: Any, p: Any) -> Any:
    """``adj * p`` recording as little as possible (floats ``1``, ``-1``, ``0`` are free);
    ``None`` for a structural zero."""
    if isinstance(p, float):
        if p == 0.0:
            return None
        if p == 1.0:
            return adj
        if p == -1.0:
            return -adj
    if isinstance(adj, float):
        if adj == 1.0:
            return p
        if adj == -1.0:
            return -p
    return adj * p


def grad(y: Value, xs: Sequence[Value]) -> list[Value]:
    """The gradient of ``y`` w.r.t. each of ``xs``, recorded on ``y``'s tape.

    The reverse sweep from ``y`` is recorded as rows (inside that tape's context)
    with each op's Value-level partials, so the results are Values that can be
    differentiated again (second, third derivatives, mixed partials), replayed with
    :meth:`Tape.forward` or wrapped in a :class:`Function`. Only rows that ``y``
    depends on and that depend on some of ``xs`` are swept. ``.grad`` fields are
    not touched.

    Parameters
    ----------
    y : Value
        The Value to differentiate.
    xs : list or tuple of Value
        Leaves or computed Values; the derivative w.r.t. a computed Value treats it
        as a variable (total derivative through it).

    Returns
    -------
    list of Value
        ``d y / d xs[k]`` for each ``k``; a new constant leaf ``0.0`` where ``y`` does
        not depend on ``xs[k]``.

    Raises
    ------
    TypeError
        If ``y`` is not a Value or ``xs`` is not a list or tuple of Values.
    NotImplementedError
        If the sweep meets a row with no Value-level rule: one made with
        ``Value(data, _children, _op)`` and a ``_backward`` closure, or a
        :func:`defop` op defined without ``grad_rule``. The message names the op
        and the row.

    Examples
    --------
    >>> import tapegrad
    >>> from tapegrad import Value
    >>> x = Value(3.0)
    >>> y = x ** 3
    >>> (dy,) = tapegrad.grad(y, [x])
    >>> (d2y,) = tapegrad.grad(dy, [x])
    >>> (d3y,) = tapegrad.grad(d2y, [x])
    >>> dy.data, d2y.data, d3y.data
    (27.0, 18.0, 6.0)
    """
    if not isinstance(y, Value):
        raise TypeError(f"grad: y must be a Value, got {type(y).__name__}")
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"grad: xs must be a list or tuple of Values, got {type(xs).__name__}")
    for k, x in enumerate(xs):
        if not isinstance(x, Value):
            raise TypeError(f"grad: xs[{k}] must be a Value, got {type(x).__name__}")
    tape = y.tape
    cols = tape.columns()
    root = y.row
    x_rows = []
    for x in xs:
        try:
            x_rows.append(tape.row_of(x))
        except ValueError:               # not used on y's tape: y does not depend on it
            x_rows.append(-1)
    sources = np.array([r for r in x_rows if 0 <= r <= root], np.int64)
    adj: dict[int, Any] = {root: 1.0}
    with tape:
        if sources.size:
            active = (_graph.ancestors(cols.a0, cols.a1, cols.level, np.array([root]))[:root + 1]
                      & _graph.descendants(cols.a0, cols.a1, cols.level, sources, root + 1))
            rows = np.flatnonzero(active)[::-1]
            ops, a0s, a1s = cols.op[rows].tolist(), cols.a0[rows].tolist(), cols.a1[rows].tolist()
            consts = cols.const[rows].tolist()
            for r, code, i, j, c in zip(rows.tolist(), ops, a0s, a1s, consts):
                g = adj.get(r)
                if g is None or code == 0:
                    continue
                op = OPS[code]
                if op.grad_rule is None:
                    raise NotImplementedError(_no_rule(tape, op, r))
                x = tape.value(i) if i >= 0 else c
                if op.arity == 1:
                    yv = c
                else:
                    yv = tape.value(j) if j >= 0 else c
                d0, d1 = op.grad_rule(x, yv, tape.value(r))
                for arg, d in ((i, d0), (j if op.arity == 2 else -1, d1)):
                    if arg < 0 or not active[arg]:
                        continue
                    share = _scale(g, d)
                    if share is None:
                        continue
                    prev = adj.get(arg)
                    adj[arg] = share if prev is None else prev + share
        out = []
        for r in x_rows:
            g = adj.get(r) if r >= 0 else None
            out.append(Value(float(g) if isinstance(g, (float, int)) else 0.0)
                       if not isinstance(g, Value) else g)
    return out


def _no_rule(tape: Tape, op: Any, row: int) -> str:
    where = f"row {row} of tape {tape.name!r}{tape.describe(row)}"
    if op.custom:
        return (f"tapegrad.grad cannot differentiate {where}: it was made with "
                "Value(data, _children, _op) and a _backward closure, which computes "
                "numbers, not recorded ops. Build it from tapegrad's ops, or define it "
                "with tapegrad.defop(..., grad_rule=...)")
    return (f"tapegrad.grad cannot differentiate op {op.name!r} at {where}: it has no "
            "Value-level rule. Define it with tapegrad.defop(..., grad_rule=...) "
            "(partials built from Values)")
