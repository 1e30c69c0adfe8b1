"""Function-style ops (no operator spells them) and :func:`defop`, to add your own.

    from tapegrad import atan2, maximum, clip, defop
    angle = atan2(y, x)                 # Values or numbers on either side
    h = maximum(a, 0.0)

Each records one row per op, like the operators do; with only numbers it returns a float.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import _record, ops
from ._record import apply
from .engine import Value
from .ops import Op

__all__ = ["atan2", "log1p", "expm1", "leaky_relu", "maximum", "minimum", "clip", "heaviside",
           "dot", "defop"]


def atan2(y: Any, x: Any) -> Any:
    """The angle of the point ``(x, y)``, as :func:`math.atan2` (``y`` first)."""
    return apply(ops.ATAN2, y, x)


def log1p(x: Any) -> Any:
    """``log(1 + x)``, accurate for small ``x``."""
    return apply(ops.LOG1P, x)


def expm1(x: Any) -> Any:
    """``exp(x) - 1``, accurate for small ``x``."""
    return apply(ops.EXPM1, x)


def leaky_relu(x: Any, slope: Any = 0.01) -> Any:
    """``x`` where ``x > 0``, else ``slope * x``."""
    return apply(ops.LEAKY_RELU, x, slope)


def maximum(a: Any, b: Any) -> Any:
    """The larger of ``a`` and ``b``; on a tie the gradient is split evenly (as PyTorch)."""
    return apply(ops.MAXIMUM, a, b)


def minimum(a: Any, b: Any) -> Any:
    """The smaller of ``a`` and ``b``; on a tie the gradient is split evenly."""
    return apply(ops.MINIMUM, a, b)


def clip(x: Any, lo: Any, hi: Any) -> Any:
    """``x`` limited to ``[lo, hi]`` (two rows: ``minimum(maximum(x, lo), hi)``)."""
    return minimum(maximum(x, lo), hi)


def dot(ws: Sequence[Any], xs: Sequence[Any], start: Any = 0.0) -> Any:
    """``sum(map(operator.mul, ws, xs), start)``, recorded in bulk.

    The same rows as that loop (``w0*x0``, ``start + p0``, ``w1*x1``, ``acc + p1``, ...;
    sums left to right, so values are bit-identical), written with a few NumPy
    operations instead of one Python call per row: several times faster for long
    vectors. Only the result becomes a Value. Inputs it cannot take in bulk (mixed
    numbers and Values, Values of other tapes, Value subclasses, ``detect_anomaly``)
    go through the loop itself, with the same result.

    Parameters
    ----------
    ws, xs : sequence of Value or float
        Of equal length; one of them may hold plain numbers.
    start : Value or float, default 0.0
        Added first, as ``sum``'s start.

    Returns
    -------
    Value or float
        A float if no operand is a Value.

    Raises
    ------
    ValueError
        If ``ws`` and ``xs`` differ in length.

    Examples
    --------
    >>> from tapegrad import Value, dot
    >>> w = [Value(1.0), Value(2.0)]
    >>> dot(w, [3.0, 4.0], start=0.5).data
    11.5
    """
    ws, xs = list(ws), list(xs)
    if len(ws) != len(xs):
        raise ValueError(f"dot needs sequences of equal length, got {len(ws)} and {len(xs)}")
    if len(ws) >= _BULK_DOT_MIN:
        start = _record.as_immediate(start)
        t = _record.bulk_target()
        if t is not None and type(start) in (float, Value):
            # w * x records (w, x); number * x records (x, number), as x.__rmul__ does
            values, numbers = (ws, xs) if type(ws[0]) is Value else (xs, ws)
            immediates = [_record.as_immediate(v) for v in numbers]
            out, _ = _record.record_dots(t, [values], immediates, [start], None)
            if out is not None:
                return out[0]
    return builtins.sum(map(operator.mul, ws, xs), start)


def sum(values: Iterable[Any], start: Any = 0) -> Any:  # noqa: A001 - tapegrad.sum
    """``sum(values, start)`` as the builtin computes it, recorded in bulk for Values.

    The same rows as the builtin's loop (``start + v0``, ``acc + v1``, ...; left to
    right, bit-identical values), written with a few NumPy operations. Anything else
    (numbers, mixed operands, Values of other tapes) is left to the builtin. Not in
    ``tapegrad.__all__``, so ``from tapegrad import *`` keeps the builtin ``sum``.

    Parameters
    ----------
    values : iterable of Value or number
    start : Value or number, default 0

    Returns
    -------
    Value or number

    Examples
    --------
    >>> import tapegrad
    >>> from tapegrad import Value
    >>> tapegrad.sum([Value(float(k)) for k in range(20)]).data
    190.0
    """
    values = list(values)
    if len(values) >= _BULK_SUM_MIN:
        first = _record.as_immediate(start)
        t = _record.bulk_target()
        if t is not None and type(first) in (float, Value):
            out = _record.record_sum(t, values, first)
            if out is not None:
                return out
    return builtins.sum(values, start)


_BULK_DOT_MIN = 8      # lengths from which dot() and sum() write in bulk (measured:
_BULK_SUM_MIN = 16     # benchmarks/bench_engine.py, bulk rows)


def heaviside(x: Any, at_zero: Any = 0.5) -> Any:
    """1 where ``x > 0``, 0 where ``x < 0``, ``at_zero`` where ``x == 0`` (np.heaviside);
    its derivative is 0. Not a guard: replays may change its outcome."""
    return apply(ops.HEAVISIDE, x, at_zero)


def defop(name: str, forward: Callable, partials: Callable, *, arity: int = 1,
          reads: str = "xyo", symbol: str | None = None,
          scalar: Callable | None = None,
          scalar_partials: Callable | None = None, grad_rule: Callable | None = None,
          curvature: str = "xx xy yy") -> Callable[..., Any]:
    """Add an op to the tape's op table and return a function that records it.

    Parameters
    ----------
    name : str
        The op's name in dumps, statistics and saved tapes (unique).
    forward : callable
        ``forward(x, y) -> out``, vectorized over NumPy arrays (``y`` is ignored by
        unary ops). Used by replays and ``Function``.
    partials : callable
        ``partials(x, y, out) -> (d out/dx, d out/dy)``, vectorized (return 0 for the
        slot a unary op does not have). Used by backward.
    arity : {1, 2}
        Operands the op takes.
    reads : str
        Which of ``x``, ``y``, ``out`` (letters of ``"xyo"``) ``partials`` reads.
    symbol : str, optional
        Shown in pictures (defaults to ``name``).
    scalar, scalar_partials : callable, optional
        The same rules on Python floats, for recording and the backward of small graphs;
        by default the vectorized rules are called on NumPy scalars (correct, slower).
    grad_rule : callable, optional
        ``grad_rule(x, y, out) -> (d out/dx, d out/dy)`` built from Values (recorded
        ops; ``x``/``y`` are floats where the row holds an immediate, ``out`` is the
        row's Value), for :func:`tapegrad.grad` and Hessians. Without it, those raise
        ``NotImplementedError`` for a row of this op (``backward`` and first
        derivatives still work).
    curvature : str
        Operand pairs whose second partial can be non-zero (``"xx"``, ``"xy"``,
        ``"yy"``, space separated), for Hessian sparsity; all of them by default.

    Returns
    -------
    callable
        ``f(x)`` or ``f(x, y)`` taking Values or numbers, recording one row.

    Raises
    ------
    ValueError
        If ``name`` is taken, ``arity`` is not 1 or 2, or the table is full.
    TypeError
        If a rule is not callable.

    Examples
    --------
    >>> import numpy as np, tapegrad
    >>> softplus = tapegrad.defop("softplus", lambda x, y: np.logaddexp(0.0, x),
    ...                           lambda x, y, out: (1.0 / (1.0 + np.exp(-x)), 0.0),
    ...                           reads="x")
    >>> v = tapegrad.Value(0.0)
    >>> s = softplus(v)
    >>> s.backward()
    >>> round(s.data, 6), v.grad
    (0.693147, 0.5)
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"op name must be an identifier, got {name!r}")
    if arity not in (1, 2):
        raise ValueError(f"arity must be 1 or 2, got {arity!r}")
    for what, rule in (("forward", forward), ("partials", partials), ("scalar", scalar),
                       ("scalar_partials", scalar_partials), ("grad_rule", grad_rule)):
        if rule is not None and not callable(rule):
            raise TypeError(f"{what} must be callable, got {type(rule).__name__}")
    if not set(reads) <= set("xyo"):
        raise ValueError(f"reads takes letters of 'xyo', got {reads!r}")

    def scalar_rule(x: float, y: float) -> float:
        with np.errstate(all="ignore"):
            return float(forward(np.float64(x), np.float64(y)))

    def scalar_partial_rule(x: float, y: float, out: float) -> tuple[float, float]:
        with np.errstate(all="ignore"):
            d0, d1 = partials(np.float64(x), np.float64(y), np.float64(out))
        return float(d0), float(d1)

    if not isinstance(curvature, str) or not set(curvature.split()) <= {"xx", "xy", "yy"}:
        raise ValueError(f"curvature takes 'xx', 'xy', 'yy' separated by spaces, got "
                         f"{curvature!r}")
    op = ops.register(Op(len(ops.OPS), name, symbol or name, arity, scalar or scalar_rule,
                         forward, partials, reads, scalar_partials or scalar_partial_rule,
                         grad_rule=grad_rule, curvature=curvature))

    def record(*args: Any) -> Any:
        return apply(op, *args)

    record.__name__ = record.__qualname__ = name
    record.__doc__ = f"Record ``{name}`` of {arity} operand{'s' * (arity > 1)} as one row."
    return record
