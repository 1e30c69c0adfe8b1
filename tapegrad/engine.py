"""``Value``: micrograd's scalar, backed by one row of a tape.

``from tapegrad.engine import Value`` is a drop-in for ``from micrograd.engine import
Value``: same operators, ``relu()``, ``backward()``, ``data``/``grad`` as floats. A Value
holds only the block of tape rows its row is in, its offset there and its level; the
data, the gradient and the graph live on the tape.
"""

from __future__ import annotations

import copy
from _thread import get_ident
from collections.abc import Callable

from . import _context, _record, _sweep, ops
from ._record import as_number, binary, compare, reflected, unary
from ._rows import Block
from .tape import Tape

__all__ = ["Value"]

_LEAF_STAGED = (ops.LEAF.code, -1, -1, 0.0, 0)     # a leaf's staged fields (Rows.append)


class Value:
    """A scalar recorded on a tape, with micrograd's API.

    ``Value(x)`` records a leaf (an input or a parameter) on the current tape. Ops on
    Values record one row each and return a new Value; numbers on either side become
    the row's immediate constant (``x * 3`` records one row, not two).

    Parameters
    ----------
    data : float
        The value of the leaf: any real number (``int``, ``float``, ``bool``, NumPy
        scalars), stored as a float64.
    label : str, optional
        A name shown in pictures and dumps (default ``""``, none).

    Raises
    ------
    TypeError
        If ``data`` is not a real number (a Value, a complex number, a str...) or
        ``label`` is not a str.
    ValueError
        If ``data`` is an int too large for a float64.

    See Also
    --------
    Tape : where the rows are recorded.

    Examples
    --------
    >>> from tapegrad import Value
    >>> a = Value(-4.0)
    >>> b = Value(2.0)
    >>> c = a * b + b**3 + (b - a).relu()
    >>> c.backward()
    >>> print(c.data, a.grad, b.grad)
    6.0 1.0 9.0
    """

    # "__dict__": attributes of your own (``p.velocity = 0.0``); made only when used
    __slots__ = ("_b", "_o", "_l", "__dict__", "__weakref__")
    __array_ufunc__ = None   # numpy scalars and arrays defer to Value's reflected ops

    _b: Block   # the block of rows this Value's row is in (it keeps them alive)
    _o: int     # the row's number when the block was made (row = _o - _b.shift)
    _l: int     # level of the row (0 for leaves)

    def __init__(self, data: float, _children: tuple = (), _op: str = "",
                 label: str = "") -> None:
        if type(data) is float and not _children and type(label) is str and not label:
            # the hot path of record_leaf (tests/test_record.py checks they agree): the
            # current tape's rows, if they are current in this thread only
            t = _context.leaf_rows
            r = t.count
            if r < t.limit and t.cur_tid == get_ident():
                t.vals[r] = data
                t.count = r + 1
                t.stage.extend(_LEAF_STAGED)
                self._b = t.cur
                self._o = r
                self._l = 0
                return
        x = as_number(data, "Value(data)")
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {type(label).__name__}")
        if _children:       # micrograd's way of adding an op: see ``_backward``
            _record.record_custom(self, x, _children, _op, label)
        else:
            _record.record_leaf(self, x, label)

    # -- data and gradient -----------------------------------------------------------

    @property
    def data(self) -> float:
        """The forward value, a float (settable; a real number, as for ``Value(data)``).

        Setting it on a leaf changes the input of later ops and of a replay
        (:meth:`Tape.forward`); Values computed before keep their values until then.
        """
        b = self._b
        return b.rows.vals[self._o - b.shift]

    @data.setter
    def data(self, x: float) -> None:
        if type(x) is not float:
            x = as_number(x, "Value.data")
        b = self._b
        b.rows.vals[self._o - b.shift] = x

    @property
    def grad(self) -> float:
        """d(root)/d(self) from the last ``backward()``, a float (settable).

        Leaves accumulate across ``backward()`` calls; set it to 0 (or call
        ``zero_grad``) between steps.
        """
        b = self._b
        return b.rows.grads[self._o - b.shift]

    @grad.setter
    def grad(self, g: float) -> None:
        if type(g) is not float:
            g = as_number(g, "Value.grad")
        b = self._b
        b.rows.grads[self._o - b.shift] = g

    @property
    def label(self) -> str:
        """A name shown in pictures and dumps, a str (``""`` when none; settable)."""
        b = self._b
        return b.rows.label(self._o - b.shift)

    @label.setter
    def label(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"label must be a str, got {type(text).__name__}")
        b = self._b
        b.rows.set_label(self._o - b.shift, text)

    @property
    def tape(self) -> Tape:
        """The :class:`Tape` this Value's row is on."""
        return Tape.of(self._b.rows)

    @property
    def row(self) -> int:
        """This Value's row number on its tape, an int.

        Rows renumber when the tape compacts. Raises :class:`ResetTapeError` if the tape
        was reset since this Value was recorded.
        """
        b = self._b
        b.rows.check_alive()
        return self._o - b.shift

    @property
    def level(self) -> int:
        """Topological level of the row, an int: 0 for leaves, else 1 + the highest
        operand's."""
        return self._l

    def is_leaf(self) -> bool:
        """Whether this Value was made with ``Value(x)`` (not computed by an op).

        Returns
        -------
        bool
            ``True`` for a leaf (level 0).
        """
        return self._l == 0

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
    log1p = unary(ops.LOG1P)
    expm1 = unary(ops.EXPM1)
    _leaky_relu = binary(ops.LEAKY_RELU)

    def leaky_relu(self, slope: Value | float = 0.01) -> Value:
        """``self`` where it is positive, else ``slope * self`` (one row)."""
        return self._leaky_relu(slope)

    _heaviside = binary(ops.HEAVISIDE)

    def heaviside(self, at_zero: Value | float = 0.5) -> Value:
        """1 where ``self > 0``, 0 where it is negative, ``at_zero`` at 0 (one row).

        A data op, not a comparison: a replay where the sign changes is fine. Its
        derivative is 0.
        """
        return self._heaviside(at_zero)

    # -- comparisons: Python bools, recorded as guards a replay checks ---------------------

    __lt__ = compare(ops.LT)
    __le__ = compare(ops.LE)
    __gt__ = compare(ops.GT)
    __ge__ = compare(ops.GE)

    # -- identity: a Value is its row (micrograd: the object), so that the Values ``_prev``
    # returns compare equal to, and hash like, the ones the user holds

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Value):
            return self._b is other._b and self._o == other._o
        return NotImplemented

    def __hash__(self) -> int:
        return hash((id(self._b), self._o))

    def pow(self, k: Value | float) -> Value:
        """``self ** k`` (micrograd's spelling in some notebooks).

        Parameters
        ----------
        k : Value or float
            The exponent.

        Returns
        -------
        Value
            The recorded power.
        """
        return self ** k

    # -- backward ----------------------------------------------------------------------

    def backward(self) -> None:
        """Fill ``.grad`` of every Value this one depends on with d(self)/d(that).

        Leaf gradients accumulate across calls (call ``zero_grad`` between steps);
        non-leaf rows hold this call's gradient. No recursion: small graphs are swept
        row by row, larger ones by a vectorized schedule over the root's ancestors.

        Raises
        ------
        FloatingPointError
            Under :class:`detect_anomaly`, at the first row whose local partial turns a
            finite gradient into nan or inf.

        See Also
        --------
        Tape.backward_from : the same sweep, given a row number.
        """
        b = self._b
        t = b.rows
        t.check_alive()
        _sweep.run_backward(t, self._o - b.shift, self._l)

    # -- micrograd's graph attributes ---------------------------------------------------

    @property
    def _prev(self) -> set[Value]:
        """The Values this one was computed from (constants are immediates, not Values).

        They equal (and hash like) the Values you hold for those rows, and repeated
        calls give the same objects while they are alive, so micrograd-style graph
        walkers (``build_topo`` with a ``visited`` set, ``trace`` naming nodes by
        ``id``) see each node once."""
        b = self._b
        t = b.rows
        _, i, j, _ = t.row(self._o - b.shift)
        return {_record.facade_for(t, r) for r in (i, j) if r >= 0}

    @property
    def _backward(self) -> Callable[[], None]:
        """micrograd's per-node step: ``v._backward()`` adds ``v.grad`` times this row's
        local partials to its operands' ``.grad`` (manual backprop, node by node); for a
        Value made with ``Value(data, children, op)``, the closure you set."""
        b = self._b
        t = b.rows
        row = self._o - b.shift
        if t.row(row)[0] is ops.CUSTOM:
            return t.closure(row) or _nothing

        def step() -> None:
            op, i, j, c = t.row(row)
            if op.partials is None:             # a leaf or a guard: nothing flows on
                return
            x = t.value(i) if i >= 0 else c
            y = t.value(j) if j >= 0 else c
            d0, d1 = op.local(x, y, t.value(row))
            g = t.grad(row)
            for arg, d in ((i, d0), (j, d1)):
                if arg >= 0:
                    t.set_grad(arg, t.grad(arg) + d * g)
        return step

    @_backward.setter
    def _backward(self, fn: Callable[[], None]) -> None:
        b = self._b
        t = b.rows
        row = self._o - b.shift
        if t.row(row)[0] is not ops.CUSTOM:
            raise ValueError("_backward can be set only on a Value made with "
                             "Value(data, _children, _op) (micrograd's way of adding an op); "
                             "tapegrad computes the gradients of its own ops")
        if not callable(fn):
            raise TypeError(f"_backward must be callable, got {type(fn).__name__}")
        t.set_closure(row, fn)

    @property
    def _op(self) -> str:
        """The op that produced this Value, as micrograd names it (``""`` for leaves)."""
        b = self._b
        row = self._o - b.shift
        op, i, j, c = b.rows.row(row)
        if op is ops.POW and j < 0:
            return f"**{c:g}"
        if op is ops.CUSTOM:
            return b.rows.custom_symbol(row)
        return op.symbol

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"

    # -- copies and pickles: leaves only (PyTorch's rule) ----------------------------------

    def _leaf_state(self, what: str) -> tuple[float, float, str, dict]:
        if self._l:
            raise RuntimeError(
                f"only leaf Values (made with Value(x)) support {what}: this one was "
                f"computed by {self._op!r} at row {self.row} of tape {self.tape.name!r}; "
                "make a new leaf from its data instead: Value(v.data)")
        return self.data, self.grad, self.label, dict(getattr(self, "__dict__", {}))

    def __copy__(self) -> Value:
        """A new, independent leaf on the current tape with this leaf's data and grad."""
        return _leaf(*self._leaf_state("copy"))

    def __deepcopy__(self, memo: dict) -> Value:
        data, grad, label, attrs = self._leaf_state("deepcopy")
        return _leaf(data, grad, label, copy.deepcopy(attrs, memo))

    def __reduce__(self) -> tuple:
        """Pickles a leaf as its data, grad, label and attributes; unpickling records a
        new leaf on the current tape."""
        return _leaf, self._leaf_state("pickling")


def _leaf(data: float, grad: float, label: str, attrs: dict) -> Value:
    """A new leaf with ``data``, ``grad``, ``label`` and attributes (copies, unpickling)."""
    v = Value(data, label=label)
    v.grad = grad
    if attrs:
        v.__dict__.update(attrs)
    return v


def _nothing() -> None:
    """micrograd's default ``_backward``: no gradient flows."""


_record.register_facade(Value)
