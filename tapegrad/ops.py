"""The op table: the one place where every opcode of the tape is defined.

Each :class:`Op` carries its name, the symbol pictures and dumps show, how many
``Value`` operands it takes, and three rules:

* ``scalar(x, y)``: the eager forward rule on Python floats, used while recording.
  It may raise (``ZeroDivisionError``, ``OverflowError``, ``ValueError``); the tape
  then falls back to the vectorized rule, so eager results follow IEEE like NumPy.
* ``forward(x, y)``: the same rule vectorized over arrays (replay, checks).
* ``partials(x, y, out)``: the local partial derivatives ``(d out/dx, d out/dy)``,
  vectorized over arrays (the reverse sweep). ``reads`` names the arguments
  the rule uses (letters of ``"xyo"``); the sweep gathers only those and passes
  ``None`` for the others.
* ``scalar_partials(x, y, out)``: the same partials on Python floats, for the
  sequential sweep of small graphs. It may raise like ``scalar``; :meth:`Op.local`
  then falls back to the vectorized rule. A test checks that both rules agree.
* ``grad_rule(x, y, out)``: the same partials built from Values (recorded ops), so
  that :func:`tapegrad.grad` can record a reverse sweep that is differentiated again.
  ``x``/``y`` are Values, or floats where the row holds an immediate (then that
  side's partial is not used; return ``0.0``); ``out`` is the row's Value. A partial
  may be a float: ``0.0`` is a structural zero, ``1.0``/``-1.0`` record no multiply.
* ``zero_partials``: the partials are 0 everywhere (``heaviside``), so the result
  does not depend on the operands for sparsity patterns.
* ``curvature``: the operand pairs (``"xx"``, ``"xy"``, ``"yy"``, space separated)
  whose second partial can be non-zero, for Hessian sparsity patterns: ``""`` for
  ``+ - neg`` and piecewise-linear ops, ``"xy"`` for ``*``. Conservative by default.

An op with operands must have partials unless it is a guard (a comparison, whose
outcome a replay checks): defining one without is an error at import time.

Binary ops take ``x`` and ``y``; either of them may be an immediate constant stored
in the row instead of a Value operand (``x + 1.0``, ``2 ** x``), in which case the
partial for that side is simply not used. Unary ops receive the row's constant as
``y`` and ignore it. Adding an op means adding one entry here, one facade method
in :mod:`tapegrad.engine`, and a test.

The vectorized rules are written once against an array namespace: ``array_rule(lambda
xp, x, y: xp.tanh(x))``, with ``xp`` NumPy or any array API namespace (PyTorch, CuPy
through ``array_api_compat``). :class:`Op` keeps the NumPy form in ``forward`` and
``partials`` (bound once at import, as fast as a direct NumPy rule) and the
namespace form in ``xp_forward`` and ``xp_partials``; :meth:`Op.array_rules` hands out
the pair for a namespace. A rule given as a plain callable (``defop`` without
``array_rule``) is a NumPy rule only.
"""

from __future__ import annotations

import functools
import math
import operator
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ScalarRule = Callable[[float, float], float]
ArrayRule = Callable[[np.ndarray, np.ndarray], np.ndarray]
PartialRule = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[object, object]]


def _numpy_namespace() -> Any:
    """NumPy with the array API's spellings (``pow``, ``atan2``, ``astype``): NumPy itself
    from 2.1 on, a thin module over it before."""
    if all(hasattr(np, name) for name in ("pow", "atan2", "astype")):
        return np
    shim = types.ModuleType("numpy_array_api")
    shim.__getattr__ = lambda name: getattr(np, name)     # type: ignore[method-assign]
    shim.pow, shim.atan2 = np.power, np.arctan2
    shim.astype = lambda x, dtype: np.asarray(x).astype(dtype)
    return shim


NUMPY = _numpy_namespace()
"""The namespace NumPy forms of :class:`NamespaceRule` rules are bound to."""


class NamespaceRule:
    """A vectorized rule written once against an array namespace: ``fn(xp, *args)``.

    Calling the rule itself evaluates it with NumPy; :class:`Op` binds the NumPy form
    once (``functools.partial``) and keeps ``fn`` for other namespaces.

    Parameters
    ----------
    fn : callable
        ``fn(xp, x, y)`` (a forward rule) or ``fn(xp, x, y, out)`` (partials), using only
        ``xp``'s functions and array operators.
    """

    __slots__ = ("fn", "numpy")

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"an array rule must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.numpy = functools.partial(fn, NUMPY)

    def __call__(self, *args: Any) -> Any:
        return self.fn(NUMPY, *args)

    def __repr__(self) -> str:
        return f"array_rule({getattr(self.fn, '__name__', 'rule')})"


def array_rule(fn: Callable[..., Any]) -> NamespaceRule:
    """Mark ``fn(xp, ...)`` as a rule for any array namespace ``xp`` (see :class:`NamespaceRule`).

    Parameters
    ----------
    fn : callable
        The rule, taking the namespace first.

    Returns
    -------
    NamespaceRule
    """
    return NamespaceRule(fn)


_r = array_rule


@dataclass(frozen=True)
class Op:
    """One opcode: its identity, its eager and vectorized forward rules and its partials."""

    code: int
    name: str
    symbol: str
    arity: int
    scalar: ScalarRule | None
    forward: ArrayRule | NamespaceRule | None
    partials: PartialRule | NamespaceRule | None
    reads: str = "xyo"
    scalar_partials: Callable[[float, float, float], tuple[float, float]] | None = None
    guard: bool = False
    custom: bool = False
    grad_rule: Callable[[object, object, object], tuple[object, object]] | None = None
    curvature: str = "xx xy yy"
    zero_partials: bool = False     # partials are 0 everywhere (heaviside): no dependency
    xp_forward: Callable[..., Any] | None = field(default=None, init=False, repr=False)
    xp_partials: Callable[..., Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("forward", "partials"):         # NumPy form bound once, xp form kept
            rule = getattr(self, name)
            if isinstance(rule, NamespaceRule):
                object.__setattr__(self, name, rule.numpy)
                object.__setattr__(self, "xp_" + name, rule.fn)
        if self.arity and not (self.guard or self.custom) and (
                self.partials is None or self.scalar_partials is None):
            raise TypeError(f"op {self.name!r} takes operands but defines no partials "
                            "(vectorized and scalar): it would get zero gradients silently. "
                            "Give it partials, or make it a guard.")
        if self.guard and self.partials is not None:
            raise TypeError(f"guard op {self.name!r} must not define partials")
        if not set(self.curvature.split()) <= {"xx", "xy", "yy"}:
            raise ValueError(f"op {self.name!r}: curvature takes 'xx', 'xy', 'yy' separated "
                             f"by spaces, got {self.curvature!r}")

    def array_rules(self, xp: Any) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        """``(forward, partials)`` of this op for arrays of namespace ``xp``.

        Raises
        ------
        TypeError
            If the op's rules are NumPy rules only (a ``defop`` op given plain
            callables) and ``xp`` is not NumPy.
        """
        if xp is np or xp is NUMPY:
            return self.forward, self.partials
        if self.forward is not None and self.xp_forward is None or (
                self.partials is not None and self.xp_partials is None):
            raise TypeError(
                f"op {self.name!r} has NumPy-only rules, so it cannot run on "
                f"{getattr(xp, '__name__', xp)!r} arrays: define it with "
                "tapegrad.defop(name, array_rule(lambda xp, x, y: ...), "
                "array_rule(lambda xp, x, y, out: ...)), using only xp's functions")
        fwd = None if self.xp_forward is None else functools.partial(self.xp_forward, xp)
        par = None if self.xp_partials is None else functools.partial(self.xp_partials, xp)
        return fwd, par

    def local(self, x: float, y: float, out: float) -> tuple[float, float]:
        """Local partials on Python floats with IEEE results (inf/nan, never an exception)."""
        try:
            return self.scalar_partials(x, y, out)
        except (ArithmeticError, ValueError):
            with np.errstate(all="ignore"):
                d0, d1 = self.partials(np.float64(x), np.float64(y), np.float64(out))
            return float(d0), float(d1)

    def evaluate(self, x: float, y: float = 0.0) -> float:
        """Forward rule on two Python floats with IEEE results (inf/nan, never an exception)."""
        try:
            return self.scalar(x, y)
        except (ArithmeticError, ValueError):
            with np.errstate(all="ignore"):
                return float(self.forward(np.float64(x), np.float64(y)))

    def __repr__(self) -> str:
        return f"<op {self.code} {self.name}>"


# ---------------------------------------------------------------------------
# scalar (eager) rules that are not plain operators
# ---------------------------------------------------------------------------

def _relu(x: float, y: float) -> float:
    return 0.0 if x < 0 else x  # micrograd's rule: nan stays nan, -0.0 stays -0.0


def _sigmoid(x: float, y: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _sigmoid_array(xp: Any, x: Any, y: Any) -> Any:
    x = xp.asarray(x, dtype=xp.float64)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _pow_partials(xp: Any, x: Any, y: Any, out: Any) -> tuple[object, object]:
    # d(x**y)/dx = y * x**(y-1), which is 0 for y == 0 (not 0 * 0**-1 = nan at x == 0);
    # where x**(y-1) alone overflows, (y * x**y) / x can still be finite
    dx = y * xp.pow(x, y - 1.0)
    alt = (y * out) / x
    dx = xp.where(xp.isinf(dx) & xp.isfinite(alt), alt, dx)
    dx = xp.where(y == 0, 0.0, dx)
    # d(x**y)/dy = x**y * log(x); at x == 0 with y >= 0 the limit is 0 (as in PyTorch)
    dy = xp.where((x == 0) & (y >= 0), 0.0, out * xp.log(x))
    return dx, dy


def _pow_local(x: float, y: float, out: float) -> tuple[float, float]:
    dx = 0.0 if y == 0 else y * math.pow(x, y - 1.0)
    dy = 0.0 if x == 0 and y >= 0 else out * math.log(x)
    return dx, dy


def _div_local(x: float, y: float, out: float) -> tuple[float, float]:
    d0 = 1.0 / y
    return d0, -(x / y) / y


def _div_partials(xp: Any, x: Any, y: Any, out: Any) -> tuple[object, object]:
    # -(x / y) / y, not -x / (y * y): y * y overflows or underflows where the result is
    # finite (x = 1e300, y = 1e200 gives -1e-100, not 0)
    return 1.0 / y, -(x / y) / y


def _sign(x: float) -> float:
    return (x > 0) - (x < 0) if x == x else x


def _unary(fn: Callable[[float], float]) -> ScalarRule:
    """The scalar rule of ``fn``; the recorders call ``fn`` itself (``rule.of_x``)."""

    def rule(x: float, y: float) -> float:
        return fn(x)

    rule.__name__ = getattr(fn, "__name__", "unary")
    rule.of_x = fn          # type: ignore[attr-defined]
    return rule


# ---------------------------------------------------------------------------
# Value-level partials (grad_rule), for tapegrad.grad: x, y are Values or floats
# (immediates), out is the row's Value; they only use operators and facade methods
# ---------------------------------------------------------------------------

def _const(z: object) -> bool:
    return isinstance(z, float)


def _step(z: object, at_zero: float) -> object:
    """heaviside(z, at_zero) of a Value (one row) or a float."""
    if _const(z):
        return float(np.heaviside(z, at_zero))
    return z.heaviside(at_zero)


def _g_div(x, y, out):
    return (0.0 if _const(x) else 1.0 / y), (0.0 if _const(y) else -(out / y))


def _g_pow(x, y, out):
    if _const(y):
        dx = 0.0 if y == 0 else (1.0 if y == 1 else (2.0 * x if y == 2 else
                                                     y * x ** (y - 1.0)))
        return dx, 0.0
    if _const(x):
        return 0.0, (0.0 if x == 0 else out * (math.log(x) if x > 0 else math.nan))
    return y * x ** (y - 1.0), out * x.log()


def _g_atan2(x, y, out):
    r = x * x + y * y
    return (0.0 if _const(x) else y / r), (0.0 if _const(y) else -x / r)


def _g_leaky_relu(x, y, out):
    h = _step(x, 0.0)
    if _const(y):
        return y + (1.0 - y) * h, 0.0
    return (0.0 if _const(x) else y + (1.0 - y) * h), x - x * h


def _g_max(x, y, out):
    h = _step(x - y, 0.5)
    return h, 1.0 - h


def _g_min(x, y, out):
    h = _step(y - x, 0.5)
    return h, 1.0 - h


def _heaviside(x: float, y: float) -> float:
    if x > 0:
        return 1.0
    if x < 0:
        return 0.0
    return y if x == 0 else x     # nan stays nan, as np.heaviside


def _zero_partials(x, y, out):
    return 0.0, 0.0


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------

LEAF = Op(0, "leaf", "", 0, None, None, None, curvature="")
ADD = Op(1, "add", "+", 2, operator.add, _r(lambda xp, x, y: xp.add(x, y)),
         _r(lambda xp, x, y, out: (1.0, 1.0)), "", lambda x, y, out: (1.0, 1.0),
         grad_rule=lambda x, y, out: (1.0, 1.0), curvature="")
SUB = Op(2, "sub", "-", 2, operator.sub, _r(lambda xp, x, y: xp.subtract(x, y)),
         _r(lambda xp, x, y, out: (1.0, -1.0)), "", lambda x, y, out: (1.0, -1.0),
         grad_rule=lambda x, y, out: (1.0, -1.0),
         curvature="")
MUL = Op(3, "mul", "*", 2, operator.mul, _r(lambda xp, x, y: xp.multiply(x, y)),
         _r(lambda xp, x, y, out: (y, x)), "xy", lambda x, y, out: (y, x),
         grad_rule=lambda x, y, out: (y, x), curvature="xy")
DIV = Op(4, "div", "/", 2, operator.truediv, _r(lambda xp, x, y: xp.divide(x, y)),
         _r(_div_partials), "xy", _div_local,
         grad_rule=_g_div, curvature="xy yy")
POW = Op(5, "pow", "**", 2, math.pow, _r(lambda xp, x, y: xp.pow(x, y)), _r(_pow_partials),
         "xyo", _pow_local,
         grad_rule=_g_pow, curvature="xx xy yy")
NEG = Op(6, "neg", "neg", 1, _unary(operator.neg), _r(lambda xp, x, y: xp.negative(x)),
         _r(lambda xp, x, y, out: (-1.0, 0.0)), "", lambda x, y, out: (-1.0, 0.0),
         grad_rule=lambda x, y, out: (-1.0, 0.0), curvature="")
RELU = Op(7, "relu", "ReLU", 1, _relu, _r(lambda xp, x, y: xp.where(x < 0, 0.0, x)),
          _r(lambda xp, x, y, out: (xp.astype(out > 0, xp.float64), 0.0)), "o",
          lambda x, y, out: (1.0 if out > 0 else 0.0, 0.0),
          grad_rule=lambda x, y, out: (_step(x, 0.0), 0.0), curvature="")
TANH = Op(8, "tanh", "tanh", 1, _unary(math.tanh), _r(lambda xp, x, y: xp.tanh(x)),
          _r(lambda xp, x, y, out: (1.0 - out * out, 0.0)), "o",
          lambda x, y, out: (1.0 - out * out, 0.0),
          grad_rule=lambda x, y, out: (1.0 - out * out, 0.0), curvature="xx")
SIGMOID = Op(9, "sigmoid", "sigmoid", 1, _sigmoid, _r(_sigmoid_array),
             _r(lambda xp, x, y, out: (out * (1.0 - out), 0.0)), "o",
             lambda x, y, out: (out * (1.0 - out), 0.0),
             grad_rule=lambda x, y, out: (out * (1.0 - out), 0.0), curvature="xx")
EXP = Op(10, "exp", "exp", 1, _unary(math.exp), _r(lambda xp, x, y: xp.exp(x)),
         _r(lambda xp, x, y, out: (out, 0.0)), "o", lambda x, y, out: (out, 0.0),
         grad_rule=lambda x, y, out: (out, 0.0), curvature="xx")
LOG = Op(11, "log", "log", 1, _unary(math.log), _r(lambda xp, x, y: xp.log(x)),
         _r(lambda xp, x, y, out: (1.0 / x, 0.0)), "x", lambda x, y, out: (1.0 / x, 0.0),
         grad_rule=lambda x, y, out: (1.0 / x, 0.0), curvature="xx")
SQRT = Op(12, "sqrt", "sqrt", 1, _unary(math.sqrt), _r(lambda xp, x, y: xp.sqrt(x)),
          _r(lambda xp, x, y, out: (0.5 / out, 0.0)), "o", lambda x, y, out: (0.5 / out, 0.0),
          grad_rule=lambda x, y, out: (0.5 / out, 0.0), curvature="xx")
ABS = Op(13, "abs", "abs", 1, _unary(math.fabs), _r(lambda xp, x, y: xp.abs(x)),
         _r(lambda xp, x, y, out: (xp.sign(x), 0.0)), "x", lambda x, y, out: (_sign(x), 0.0),
         grad_rule=lambda x, y, out: (2.0 * _step(x, 0.5) - 1.0, 0.0), curvature="")
SIN = Op(14, "sin", "sin", 1, _unary(math.sin), _r(lambda xp, x, y: xp.sin(x)),
         _r(lambda xp, x, y, out: (xp.cos(x), 0.0)), "x", lambda x, y, out: (math.cos(x), 0.0),
         grad_rule=lambda x, y, out: (x.cos(), 0.0), curvature="xx")
COS = Op(15, "cos", "cos", 1, _unary(math.cos), _r(lambda xp, x, y: xp.cos(x)),
         _r(lambda xp, x, y, out: (-xp.sin(x), 0.0)), "x",
         lambda x, y, out: (-math.sin(x), 0.0),
         grad_rule=lambda x, y, out: (-x.sin(), 0.0), curvature="xx")

# Comparisons are guards: the facade returns a Python bool and records the outcome
# (1.0 / 0.0) so that a replay can check that the program would take the same branch.
# They have no partials: nothing is differentiated through a comparison.
LT = Op(16, "lt", "<", 2, lambda x, y: float(x < y),
        _r(lambda xp, x, y: xp.astype(xp.less(x, y), xp.float64)), None, "", guard=True,
        curvature="")
LE = Op(17, "le", "<=", 2, lambda x, y: float(x <= y),
        _r(lambda xp, x, y: xp.astype(xp.less_equal(x, y), xp.float64)), None, "", guard=True,
        curvature="")
GT = Op(18, "gt", ">", 2, lambda x, y: float(x > y),
        _r(lambda xp, x, y: xp.astype(xp.greater(x, y), xp.float64)), None, "", guard=True,
        curvature="")
GE = Op(19, "ge", ">=", 2, lambda x, y: float(x >= y),
        _r(lambda xp, x, y: xp.astype(xp.greater_equal(x, y), xp.float64)), None, "",
        guard=True,
        curvature="")

# A row made the lecture's way, ``Value(data, (a, b), "op")``: the user computed its
# value, and its backward is the user's ``_backward`` closure, run row by row. It has no
# forward rule, so a tape holding one cannot be replayed (nor differentiated again).
CUSTOM = Op(20, "custom", "?", 2, None, None, None, "", custom=True)


def _atan2_local(x: float, y: float, out: float) -> tuple[float, float]:
    r = x * x + y * y
    return y / r, -x / r


def _max_partials(xp: Any, x: Any, y: Any, out: Any) -> tuple[object, object]:
    # as PyTorch: the gradient goes to the larger operand, split evenly on a tie
    d0 = xp.where(x > y, 1.0, xp.where(x == y, 0.5, 0.0))
    return d0, 1.0 - d0


def _max_local(x: float, y: float, out: float) -> tuple[float, float]:
    d0 = 1.0 if x > y else (0.5 if x == y else 0.0)
    return d0, 1.0 - d0


def _min_partials(xp: Any, x: Any, y: Any, out: Any) -> tuple[object, object]:
    d0 = xp.where(x < y, 1.0, xp.where(x == y, 0.5, 0.0))
    return d0, 1.0 - d0


def _min_local(x: float, y: float, out: float) -> tuple[float, float]:
    d0 = 1.0 if x < y else (0.5 if x == y else 0.0)
    return d0, 1.0 - d0


# Function-style ops (tapegrad.atan2(a, b), tapegrad.maximum(a, b), Value.log1p(), ...)
ATAN2 = Op(21, "atan2", "atan2", 2, math.atan2, _r(lambda xp, x, y: xp.atan2(x, y)),
           _r(lambda xp, x, y, out: (y / (x * x + y * y), -x / (x * x + y * y))), "xy",
           _atan2_local,
           grad_rule=_g_atan2, curvature="xx xy yy")
LOG1P = Op(22, "log1p", "log1p", 1, _unary(math.log1p), _r(lambda xp, x, y: xp.log1p(x)),
           _r(lambda xp, x, y, out: (1.0 / (1.0 + x), 0.0)), "x",
           lambda x, y, out: (1.0 / (1.0 + x), 0.0),
           grad_rule=lambda x, y, out: (1.0 / (1.0 + x), 0.0), curvature="xx")
EXPM1 = Op(23, "expm1", "expm1", 1, _unary(math.expm1), _r(lambda xp, x, y: xp.expm1(x)),
           _r(lambda xp, x, y, out: (out + 1.0, 0.0)), "o", lambda x, y, out: (out + 1.0, 0.0),
           grad_rule=lambda x, y, out: (out + 1.0, 0.0), curvature="xx")
# leaky_relu(x, slope): x where x > 0, else slope * x (the slope is usually an immediate)
LEAKY_RELU = Op(24, "leaky_relu", "LeakyReLU", 2,
                lambda x, y: x if x > 0 else y * x,
                _r(lambda xp, x, y: xp.where(x > 0, x, y * x)),
                _r(lambda xp, x, y, out: (xp.where(x > 0, 1.0, y), xp.where(x > 0, 0.0, x))),
                "xy",
                lambda x, y, out: (1.0, 0.0) if x > 0 else (y, x),
                grad_rule=_g_leaky_relu, curvature="xy")
# (nan propagates from either side, as in NumPy: x != x holds only for nan)
MAXIMUM = Op(25, "maximum", "max", 2, lambda x, y: x if x >= y or x != x else y,
             _r(lambda xp, x, y: xp.maximum(x, y)), _r(_max_partials), "xy", _max_local,
             grad_rule=_g_max, curvature="")
MINIMUM = Op(26, "minimum", "min", 2, lambda x, y: x if x <= y or x != x else y,
             _r(lambda xp, x, y: xp.minimum(x, y)), _r(_min_partials), "xy", _min_local,
             grad_rule=_g_min, curvature="")
# heaviside(x, h): 1 where x > 0, 0 where x < 0, h where x == 0 (as np.heaviside). Not a
# guard: its value is data, so a replay where x changes sign is fine. The derivatives
# of relu, abs, leaky_relu, maximum and minimum that tapegrad.grad records use it.
HEAVISIDE = Op(27, "heaviside", "H", 2, _heaviside,
               _r(lambda xp, x, y: xp.where(x == 0, y, xp.where(x > 0, 1.0,
                                                              xp.where(x < 0, 0.0, x)))),
               _r(lambda xp, x, y, out: (0.0, 0.0)), "", lambda x, y, out: (0.0, 0.0),
               grad_rule=_zero_partials, curvature="", zero_partials=True)

OPS: list[Op] = [LEAF, ADD, SUB, MUL, DIV, POW, NEG, RELU, TANH, SIGMOID, EXP, LOG, SQRT, ABS,
                 SIN, COS, LT, LE, GT, GE, CUSTOM, ATAN2, LOG1P, EXPM1, LEAKY_RELU, MAXIMUM,
                 MINIMUM, HEAVISIDE]
"""Every op, indexed by its code (ops added with :func:`tapegrad.defop` are appended)."""

MAX_OPS = 128
"""Opcodes are int8: at most this many ops."""

BY_NAME: dict[str, Op] = {}

ARITY = np.zeros(MAX_OPS, np.int64)
"""Operands of each opcode (for vectorized lookups; kept in step with :data:`OPS`)."""
BINARY = np.zeros(MAX_OPS, bool)
DIFFERENTIABLE = np.zeros(MAX_OPS, bool)
"""Opcodes with partials (every op but leaves, guards and custom rows)."""
READS_OPERANDS = np.zeros(MAX_OPS, bool)
"""Opcodes whose partials read an operand's value (so an immediate there matters)."""
SCALAR_PARTIALS: list = [None] * MAX_OPS
"""Each opcode's scalar partial rule (None: leaf, guard, custom row)."""


def _index(op: Op) -> None:
    BY_NAME[op.name] = op
    ARITY[op.code] = op.arity
    BINARY[op.code] = op.arity == 2
    DIFFERENTIABLE[op.code] = op.partials is not None
    READS_OPERANDS[op.code] = op.partials is not None and bool(set(op.reads) & set("xy"))
    SCALAR_PARTIALS[op.code] = op.scalar_partials


def register(op: Op) -> Op:
    """Add ``op`` to the table (its code must be the next free one); see ``defop``."""
    if op.code != len(OPS):
        raise ValueError(f"op {op.name!r} must have code {len(OPS)}, the next free one")
    if op.code >= MAX_OPS:
        raise ValueError(f"the op table is full ({MAX_OPS} ops)")
    if op.name in BY_NAME:
        raise ValueError(f"an op named {op.name!r} exists already")
    OPS.append(op)
    _index(op)
    return op


for _op in OPS:
    _index(_op)

GUARDS = frozenset(op.code for op in OPS if op.guard)
"""Codes of the comparison ops."""

assert all(op.code == i for i, op in enumerate(OPS)), "op codes must equal their position"
