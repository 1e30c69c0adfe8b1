"""``Value``: micrograd's scalar, backed by one row of a tape.

``from tapegrad.engine import Value`` is a drop-in for ``from micrograd.engine import
Value``: same operators, ``relu()``, ``backward()``, ``data``/``grad`` as floats. A Value
holds only its tape and its row; the data, the gradient and the graph live on the tape.
"""

from __future__ import annotations

from . import ops
from .tape import (
    Tape,
    _Rows,
    as_number,
    binary,
    compare,
    record_leaf,
    reflected,
    register_facade,
    unary,
)

__all__ = ["Value"]


class Value:
    """A scalar recorded on a tape, with micrograd's API.

    ``Value(x)`` records a leaf (an input or a parameter) on the current tape. Ops on
    Values record one row each and return a new Value; numbers on either side become
    the row's immediate constant (``x * 3`` records one row, not two).
    """

    __slots__ = ("_tape", "_i", "_l")
    __array_ufunc__ = None   # numpy scalars and arrays defer to Value's reflected ops

    _tape: _Rows
    _i: int   # row on the tape
    _l: int   # level of the row (0 for leaves)

    def __init__(self, data: float, label: str = "") -> None:
        x = as_number(data, "Value(data)")
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {type(label).__name__}")
        self._tape, self._i = record_leaf(x, label)
        self._l = 0

    # -- data and gradient -----------------------------------------------------------

    @property
    def data(self) -> float:
        """The forward value."""
        return self._tape.value(self._i)

    @data.setter
    def data(self, x: float) -> None:
        self._tape.set_value(self._i, as_number(x, "Value.data"))

    @property
    def grad(self) -> float:
        """d(root)/d(self) from the last ``backward()``; leaves accumulate across calls."""
        return self._tape.grad(self._i)

    @grad.setter
    def grad(self, g: float) -> None:
        self._tape.set_grad(self._i, as_number(g, "Value.grad"))

    @property
    def label(self) -> str:
        """A name shown in pictures and dumps (``""`` when none)."""
        return self._tape._labels.get(self._i, "")

    @label.setter
    def label(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"label must be a str, got {type(text).__name__}")
        self._tape._labels[self._i] = text

    @property
    def tape(self) -> Tape:
        """The tape this Value's row is on."""
        return Tape._of(self._tape)

    @property
    def row(self) -> int:
        """This Value's row on its tape (rows renumber when a tape compacts)."""
        self._tape.check_alive()
        return self._i

    # -- arithmetic: each operator records one row (rules in tapegrad.ops) ------------------

    __add__ = binary(ops.ADD)
    __radd__ = binary(ops.ADD, mirrored=True)
    __sub__ = binary(ops.SUB)
    __rsub__ = reflected(ops.SUB)
    __mul__ = binary(ops.MUL)
    __rmul__ = binary(ops.MUL, mirrored=True)
    __truediv__ = binary(ops.DIV)
    __rtruediv__ = reflected(ops.DIV)
    __pow__ = binary(ops.POW)
    __rpow__ = reflected(ops.POW)
    __neg__ = unary(ops.NEG)

    relu = unary(ops.RELU)
    tanh = unary(ops.TANH)
    sigmoid = unary(ops.SIGMOID)
    exp = unary(ops.EXP)
    log = unary(ops.LOG)
    sqrt = unary(ops.SQRT)
    __abs__ = unary(ops.ABS)
    abs = __abs__
    sin = unary(ops.SIN)
    cos = unary(ops.COS)

    # -- comparisons: Python bools, recorded as guards a replay checks ---------------------

    __lt__ = compare(ops.LT)
    __le__ = compare(ops.LE)
    __gt__ = compare(ops.GT)
    __ge__ = compare(ops.GE)
    __hash__ = object.__hash__   # identity, as in micrograd (== stays identity too)

    def pow(self, k: Value | float) -> Value:
        """``self ** k`` (micrograd's spelling in some notebooks)."""
        return self ** k

    # -- backward ----------------------------------------------------------------------

    def backward(self) -> None:
        """Fill ``.grad`` of every Value this one depends on with d(self)/d(that).

        Leaf gradients accumulate across calls (call ``zero_grad`` between steps);
        non-leaf rows hold this call's gradient. No recursion: a vectorized reverse
        sweep over the tape.
        """
        self._tape.backward(self._i)

    # -- micrograd's graph attributes ---------------------------------------------------

    @property
    def _prev(self) -> set[Value]:
        """The Values this one was computed from (constants are immediates, not Values)."""
        t = self._tape
        _, i, j, _ = t.row(self._i)
        return {_facade_for(t, r) for r in {i, j} if r >= 0}

    @property
    def _op(self) -> str:
        """The op that produced this Value, as micrograd names it (``""`` for leaves)."""
        op, i, j, c = self._tape.row(self._i)
        if op is ops.POW and j < 0:
            return f"**{c:g}"
        return op.symbol

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"


def _facade_for(t: _Rows, r: int) -> Value:
    v = object.__new__(Value)
    v._tape = t
    v._i = r
    v._l = t.level(r)
    return v


register_facade(Value)
