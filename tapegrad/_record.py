"""Recording: the op methods of the ``Value`` facade, one row per scalar op.

The three recorders :func:`binary`, :func:`reflected` and :func:`unary` build the
facade's operator methods. They are the hot path of recording (one call per scalar
op), so they are written out flat, and compiled for each op from one source per form
(``_BINARY``, ``_REFLECTED``, ``_UNARY``) with its opcode and, for ``+ - *``, its
arithmetic written in: the operands' blocks, offsets and levels read once, the value
into the value column, the other fields onto the staging list. Anything unusual
(other number types, leaves used off their tape, a full staging block, anomaly
detection, bad operands) goes to :func:`record_general`, which writes the same row;
``tests/test_record.py`` checks that they agree.
"""

from __future__ import annotations

import itertools
import linecache
import math
import numbers
import operator
import re
import weakref
from _thread import get_ident
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _context
from ._rows import Rows
from .ops import ADD, CUSTOM, LEAF, MUL, RELU, Op

_EXACT = 2**53              # ints up to this size convert to float64 exactly and fast

_facade: type = object   # set to tapegrad.engine.Value by register_facade()
_new = object.__new__


def register_facade(cls: type) -> None:
    """Tell the recorders which class to build results with (``tapegrad.Value``)."""
    global _facade
    _facade = cls


def new_value(t: Rows, row: int, level: int) -> Any:
    """A facade for ``row`` of ``t``."""
    blk = t.block_of(row)
    v = object.__new__(_facade)
    v._b = blk
    v._o = row + blk.shift
    v._l = level
    return v


def facade_for(t: Rows, row: int) -> Any:
    """The Value for ``row`` of ``t`` that graph walks see: while one handed out before
    is alive, the same object (so walkers that collect ``_prev`` in sets, or name nodes
    by ``id()``, see each row once), else a new one."""
    blk = t.block_of(row)
    cache = blk.facades
    if cache is None:
        cache = blk.facades = weakref.WeakValueDictionary()
    o = row + blk.shift
    v = cache.get(o)
    if v is None:
        v = object.__new__(_facade)
        v._b = blk
        v._o = o
        v._l = t.level(row)
        cache[o] = v
    return v


def _describe(x: object) -> str:
    text = repr(x)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(x).__name__})"


def as_number(x: object, what: str) -> float:
    """``x`` as a float if it is a real number (NumPy scalars included), else an error
    naming it: ``TypeError`` for the wrong type, ``ValueError`` for an int too large."""
    if type(x) is float:
        return x
    if isinstance(x, _facade):
        raise TypeError(f"{what} must be a real number, got a Value: {x!r}")
    if isinstance(x, (numbers.Real, np.bool_)):
        try:
            return float(x)
        except OverflowError as err:
            raise ValueError(f"{what} does not fit in a float64: {_describe(x)}") from err
    if isinstance(x, numbers.Complex):
        raise TypeError(f"{what} must be a real number; complex numbers are not supported, "
                        f"got {_describe(x)}")
    raise TypeError(f"{what} must be a real number, got {_describe(x)}")


def _operand_error(op: Op, a: object, b: object, reflected: bool,
                   err: Exception) -> Exception:
    left, right = (b, a) if reflected else (a, b)
    where = (f"unsupported operand for {op.symbol}: "
             f"{type(left).__name__} {op.symbol} {type(right).__name__}")
    if isinstance(err, ValueError):
        return ValueError(f"{where}: {err}")
    why = "; complex numbers are not supported" if isinstance(b, numbers.Complex) else ""
    return TypeError(f"{where}: expected a Value or a real number, got {_describe(b)}{why}")


def _target(values: list) -> Rows:
    """The tape an op on ``values`` records on: that of its non-leaf operands, else the
    current one."""
    target = None
    for v in values:
        t = v._b.rows
        t.check_alive()
        if v._l:
            if target is not None and target is not t:
                raise ValueError(
                    f"cannot combine Values recorded on different tapes: {target.name!r} and "
                    f"{t.name!r}. Non-leaf Values live on the tape that recorded them; "
                    "record the whole computation on one tape (leaf Values may be shared)."
                )
            target = t
    return target if target is not None else _context.current_rows()


def _row_on(t: Rows, v: Any) -> int:
    """Row of Value ``v`` on ``t``: its own, or a mirror row if it is a leaf from elsewhere."""
    blk = v._b
    if blk.rows is t:
        return v._o - blk.shift
    return t.link(v)


def record_general(op: Op, a: Any, b: Any = None, reflected: bool = False,
                   mirrored: bool = False) -> Any:
    """Record ``a <op> b`` (or ``op(a)``) as one row, handling every case.

    ``reflected``: the number is the left operand (``2 - a``); ``mirrored``: the user
    wrote ``b <op> a`` but the op is commutative and records ``a <op> b`` (errors still
    name the operands in the order written)."""
    const = 0.0
    if op.arity == 1:
        values = [a]
    elif isinstance(b, _facade):
        values = [a, b]
    elif isinstance(b, np.ndarray):
        return _elementwise(op, a, b, reflected or mirrored)
    else:
        try:
            const = as_number(b, "the other operand")
        except (TypeError, ValueError) as err:
            raise _operand_error(op, a, b, reflected or mirrored, err) from None
        values = [a]
    t = _target(values)
    t.make_room(len(values) + 1)
    rows = [_row_on(t, v) for v in values]
    level = 1 + max(v._l for v in values)
    if len(values) == 2:
        i, j = rows
        x, y = t.value(i), t.value(j)
    elif op.arity == 1:
        i, j = rows[0], -1
        x, y = t.value(i), 0.0
    elif reflected:
        i, j = -1, rows[0]
        x, y = const, t.value(j)
    else:
        i, j = rows[0], -1
        x, y = t.value(i), const
    out = op.evaluate(x, y)
    if _context.anomaly.depth and not math.isfinite(out):
        scope_name = _context.state.scope
        where = f" [{scope_name}]" if scope_name else ""
        operands = f"x = {x!r}" + (f", y = {y!r}" if op.arity == 2 else "")
        raise FloatingPointError(
            f"detect_anomaly: {op.name} produced {out} while recording row {t.size} of tape "
            f"{t.name!r}{where}; operands {operands}")
    r = t.append(op.code, i, j, const, out, level)
    v = object.__new__(_facade)
    v._b = t.cur                    # the block rows are appended to never moved yet
    v._o = r
    v._l = level
    return v


_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
              "div": operator.truediv, "pow": operator.pow, "lt": operator.lt,
              "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def _operator(op: Op) -> Callable[[Any, Any], Any]:
    """The Python operator of ``op``, or the function-style op itself."""
    fn = _OPERATORS.get(op.name)
    return fn if fn is not None else (lambda x, y: apply(op, x, y))


def _elementwise(op: Op, a: Any, array: np.ndarray, array_first: bool) -> Any:
    """``a <op> array`` (or ``array <op> a``) element by element, as NumPy does for
    micrograd's Value: an object array of Values (bools for comparisons)."""
    fn = _operator(op)
    if array_first:
        return np.frompyfunc(lambda x: fn(x, a), 1, 1)(array)
    return np.frompyfunc(lambda x: fn(a, x), 1, 1)(array)


# -- the recorders: one source per form, compiled for each op (see _recorder) ---------

_INLINE = {operator.add: "{x} + {y}", operator.sub: "{x} - {y}", operator.mul: "{x} * {y}",
           operator.neg: "-{x}", RELU.scalar: "0.0 if {x} < 0 else {x}"}
"""Scalar rules (or the one-operand functions of unary ones) that the recorders write
as an expression: on floats they never raise."""

_BINARY = """
def method(a, b):
    ba = a._b
    t = ba.rows
    if type(b) is _facade:
        bb = b._b
        la = a._l
        lb = b._l
        r = t.count
        if bb.rows is t and r < t.limit and (la or lb or t.cur_tid == get_ident()):
            vals = t.vals
            i = a._o - ba.shift
            j = b._o - bb.shift
            FORWARD(vals[i], vals[j])
            t.count = r + 1
            level = (la if la > lb else lb) + 1
            t.stage.extend((CODE, i, j, 0.0, level))
            v = _new(_facade)
            v._b = t.cur
            v._o = r
            v._l = level
            return v
    elif type(b) is float or (type(b) is int and -_EXACT <= b <= _EXACT):
        la = a._l
        r = t.count
        if r < t.limit and (la or t.cur_tid == get_ident()):
            vals = t.vals
            i = a._o - ba.shift
            y = float(b)
            FORWARD(vals[i], y)
            t.count = r + 1
            level = la + 1
            t.stage.extend((CODE, i, -1, y, level))
            v = _new(_facade)
            v._b = t.cur
            v._o = r
            v._l = level
            return v
    return record_general(op, a, b, False, mirrored)
"""

_REFLECTED = """
def method(a, b):
    if type(b) is float or (type(b) is int and -_EXACT <= b <= _EXACT):
        ba = a._b
        t = ba.rows
        la = a._l
        r = t.count
        if r < t.limit and (la or t.cur_tid == get_ident()):
            vals = t.vals
            j = a._o - ba.shift
            x = float(b)
            FORWARD(x, vals[j])
            t.count = r + 1
            level = la + 1
            t.stage.extend((CODE, -1, j, x, level))
            v = _new(_facade)
            v._b = t.cur
            v._o = r
            v._l = level
            return v
    return record_general(op, a, b, True)
"""

_UNARY = """
def method(a):
    ba = a._b
    t = ba.rows
    la = a._l
    r = t.count
    if r < t.limit and (la or t.cur_tid == get_ident()):
        vals = t.vals
        i = a._o - ba.shift
        x = vals[i]
        FORWARD(x, 0.0)
        t.count = r + 1
        level = la + 1
        t.stage.extend((CODE, i, -1, 0.0, level))
        v = _new(_facade)
        v._b = t.cur
        v._o = r
        v._l = level
        return v
    return record_general(op, a)
"""


def _recorder(source: str, op: Op, name: str, doc: str, mirrored: bool = False) -> Callable:
    """The facade method ``name`` compiled from ``source`` (``_BINARY``...) for ``op``.

    ``CODE`` becomes the opcode, and each ``FORWARD(x, y)`` the line that writes the
    value: ``vals[r] = x + y`` for an op of :data:`_INLINE`, else a call of its scalar
    rule (of ``math.tanh`` itself for a rule made by ``ops._unary``) that falls back to
    the IEEE rule where it raises (``1 / 0.0``). The method closes over ``op``,
    ``scalar`` and ``mirrored``; the rest are this module's globals."""
    scalar = getattr(op.scalar, "of_x", op.scalar)      # math.tanh for tanh's rule
    inline = _INLINE.get(scalar)
    unary = scalar is not op.scalar

    def forward(m: re.Match) -> str:
        pad, x, y = m.groups()
        if inline is not None:
            return pad + "vals[r] = " + inline.format(x=x, y=y)
        args = x if unary else f"{x}, {y}"
        return (f"{pad}try:\n{pad}    vals[r] = scalar({args})\n"
                f"{pad}except (ArithmeticError, ValueError):\n"
                f"{pad}    vals[r] = op.evaluate({x}, {y})")

    body = re.sub(r"( *)FORWARD\((.+), (.+)\)", forward, source)
    body = body.replace("CODE", str(op.code)).replace("def method(", f"def {name}(")
    text = "def make(op, scalar, mirrored):" + body.replace("\n", "\n    ") + f"return {name}\n"
    filename = f"<tapegrad recorder Value.{name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)  # tracebacks
    namespace: dict = {}
    exec(compile(text, filename, "exec"), globals(), namespace)
    method = namespace["make"](op, scalar, mirrored)
    method.__qualname__ = f"Value.{name}"
    method.__module__ = "tapegrad.engine"     # where pickle finds it
    method.__doc__ = doc
    return method


def binary(op: Op, mirrored: bool = False) -> Callable[[Any, Any], Any]:
    """The facade method ``a <op> b`` (``b`` a Value, or a number kept as the immediate).

    ``mirrored``: the method serves ``b <op> a`` for a commutative op (``__radd__``).
    """
    if mirrored:
        return _recorder(_BINARY, op, f"__r{op.name}__", f"Record ``other {op.symbol} self`` "
                         f"as one row ({op.name}, commutative).", mirrored=True)
    return _recorder(_BINARY, op, f"__{op.name}__",
                     f"Record ``self {op.symbol} other`` as one row ({op.name}).")


def reflected(op: Op) -> Callable[[Any, Any], Any]:
    """The facade method for ``number <op> a`` (the number becomes the immediate)."""
    return _recorder(_REFLECTED, op, f"__r{op.name}__",
                     f"Record ``other {op.symbol} self`` as one row ({op.name}).")


def unary(op: Op) -> Callable[[Any], Any]:
    """The facade method ``a.<op>()``."""
    return _recorder(_UNARY, op, op.name, f"Record ``{op.name}(self)`` as one row.")


def compare(op: Op) -> Callable[[Any, Any], bool]:
    """The facade method ``a < b`` (etc.): records the outcome as a guard row, returns a bool."""
    record = binary(op)

    def method(a, b):
        out = record(a, b)
        if type(out) is not _facade:    # an array operand: an object array of bools
            return out
        return out.data != 0.0

    method.__name__ = f"__{op.name}__"
    method.__qualname__ = f"Value.{method.__name__}"
    method.__module__ = "tapegrad.engine"     # where pickle finds it
    method.__doc__ = (f"``self {op.symbol} other`` as a bool, recorded as a guard that a "
                      "replay checks.")
    return method


def apply(op: Op, *args: Any) -> Any:
    """``op`` applied to one or two operands, Values or numbers (function-style ops:
    ``tapegrad.atan2(a, 2.0)``); all numbers give a float, recorded nowhere."""
    if len(args) != op.arity:
        raise TypeError(f"{op.name} takes {op.arity} operand{'s' if op.arity > 1 else ''}, "
                        f"got {len(args)}")
    if op.arity == 1:
        a = args[0]
        if isinstance(a, _facade):
            return record_general(op, a)
        return op.evaluate(as_number(a, f"{op.name}(x)"))
    a, b = args
    if isinstance(a, _facade):
        return record_general(op, a, b)
    if isinstance(b, _facade):
        if isinstance(a, np.ndarray):
            return _elementwise(op, b, a, True)
        try:
            as_number(a, "the other operand")
        except (TypeError, ValueError) as err:
            raise _operand_error(op, b, a, True, err) from None
        return record_general(op, b, a, reflected=True)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.frompyfunc(lambda x, y: apply(op, x, y), 2, 1)(a, b)
    return op.evaluate(as_number(a, f"{op.name}(x, y): x"), as_number(b, f"{op.name}(x, y): y"))


def record_custom(v: Any, x: float, children: tuple, symbol: str, label: str) -> None:
    """Make ``v`` a row computed by the user (micrograd's ``Value(data, children, op)``):
    value ``x``, operands ``children`` (one or two Values), gradients from the
    ``_backward`` closure the user sets on it."""
    if isinstance(children, str):
        raise TypeError(f"Value(data, _children, _op): _children must be a tuple of Values, "
                        f"got {_describe(children)}; to name a Value, pass label=...")
    kids = tuple(children)
    for k, c in enumerate(kids):
        if not isinstance(c, _facade):
            raise TypeError(f"Value(data, _children, _op): _children[{k}] must be a Value, "
                            f"got {_describe(c)}")
    if len(kids) > 2:
        raise NotImplementedError(
            f"Value(data, _children, _op) takes one or two children, got {len(kids)}: "
            "combine them with ops first (a custom row has two operand slots)")
    if not isinstance(symbol, str):
        raise TypeError(f"_op must be a str, got {_describe(symbol)}")
    t = _target(list(kids))
    t.make_room(len(kids) + 1)
    rows = [_row_on(t, c) for c in kids]
    i, j = (rows + [-1])[:2]
    level = 1 + max(c._l for c in kids)
    r = t.append(CUSTOM.code, i, j, 0.0, x, level)
    t.set_custom(r, symbol)
    if label:
        t.set_label(r, label)
    v._b = t.cur
    v._o = r
    v._l = level


def record_leaf(v: Any, x: float, label: str) -> None:
    """Make ``v`` a new leaf with value ``x`` on the current tape."""
    t = _context.current_rows()
    if t.cur_tid == get_ident():
        _context.set_leaf_rows(t)         # (they had been another thread's)
    r = t.append(LEAF.code, -1, -1, 0.0, x, 0)
    if label:
        t.set_label(r, label)
    v._b = t.cur
    v._o = r
    v._l = 0


# -- bulk recording: many rows per call, the same rows as the scalar loop ---------------

def operand_rows(t: Rows, values: list,
                 mirrors: list | None = None) -> tuple[list[int], list[int]] | None:
    """(rows, levels) of ``values`` if every one is a ``Value`` (exactly) recorded on
    ``t`` or a leaf of another tape already mirrored on ``t`` (its data copied to the
    mirror row now, as each scalar op does; ``mirrors`` collects the (row, leaf) pairs),
    else None: the bulk recorders then leave the job to the scalar path, which handles
    subclasses, numbers and the first use of another tape's leaf (it adds the mirror
    row where the loop uses the leaf)."""
    rows, levels = [], []
    vals = t.vals
    for v in values:
        if type(v) is not _facade:
            return None
        b = v._b
        if b.rows is t:
            rows.append(v._o - b.shift)
            levels.append(v._l)
            continue
        row = None if v._l else t.linked_row(v)
        if row is None:
            return None
        vals[row] = v.data
        rows.append(row)
        levels.append(0)
        if mirrors is not None:
            mirrors.append((row, v))
    return rows, levels


def as_immediate(x: Any) -> Any:
    """``x`` as the float an inlined recorder stores for it (exact ints become floats),
    anything else unchanged (the bulk recorders then leave it to the scalar path)."""
    if type(x) is int and -_EXACT <= x <= _EXACT:
        return float(x)
    return x


def _chain_levels(start_lv: Any, term_lv: np.ndarray) -> np.ndarray:
    """Levels of the running sums ``acc_k = acc_{k-1} + term_k`` (last axis), with
    ``acc_{-1}`` at ``start_lv``: ``1 + max(acc_{k-1}, term_k)``, in closed form."""
    k = np.arange(term_lv.shape[-1])
    start = np.asarray(start_lv)[..., None] if np.ndim(start_lv) else start_lv
    return k + 1 + np.maximum(start, np.maximum.accumulate(term_lv - k, axis=-1))


def bulk_target() -> Rows | None:
    """The tape a bulk recorder writes to, the current one, or None if the scalar path
    must record: under :class:`detect_anomaly`, which checks every row as it is made.
    (Operands on other tapes make the bulk recorders return None too.)"""
    return None if _context.anomaly.depth else _context.current_rows()


def _new_values(t: Rows, rows: np.ndarray, levels: list[int]) -> list:
    """Facades for rows just written to the current block of ``t``."""
    blk = t.cur
    new = object.__new__
    out = []
    for r, lv in zip(rows.tolist(), levels):
        v = new(_facade)
        v._b = blk
        v._o = r
        v._l = lv
        out.append(v)
    return out


_FAR = np.iinfo(np.int64).max     # "no such operand" in a minimum over rows


class _DotLayout:
    """The rows :func:`record_dots` writes, except what changes per call.

    Operand columns hold rows relative to the first row written (``rel`` marks them)
    or absolute rows of the weights and starts, which stay valid until the tape's
    epoch changes; levels follow from the operands' levels."""

    def __init__(self, g_n: int, n: int, act: Op | None, w_rows: np.ndarray,
                 w_lv: np.ndarray, s_rows: np.ndarray | None, s_lv: np.ndarray,
                 x_imm: bool) -> None:
        self.stride = stride = 2 * n + (act is not None)
        shape = (g_n, stride)
        m, a = slice(0, 2 * n, 2), slice(1, 2 * n, 2)
        self.mul, self.add = m, a
        k = np.arange(n)
        base = stride * np.arange(g_n)[:, None]
        mul_row, add_row = base + 2 * k, base + 2 * k + 1
        op = np.empty(shape, np.int8)
        a0 = np.zeros(shape, np.int64)
        a1 = np.zeros(shape, np.int64)
        rel0 = np.ones(shape, np.int64)
        rel1 = np.ones(shape, np.int64)
        op[:, m] = MUL.code
        op[:, a] = ADD.code
        a0[:, m] = w_rows
        rel0[:, m] = 0
        rel1[:, m] = 0                       # x rows (or -1 for immediates), per call
        a1[:, m] = -1
        a0[:, a][:, 1:] = add_row[:, :-1]
        a1[:, a][:, 1:] = mul_row[:, 1:]
        if s_rows is None:                   # start + p0 records ADD(p0, start)
            a0[:, 1] = mul_row[:, 0]
            a1[:, 1] = -1
            rel1[:, 1] = 0
        else:                                # ADD(start, p0)
            a0[:, 1] = s_rows
            rel0[:, 1] = 0
            a1[:, 1] = mul_row[:, 0]
        if act is not None:
            op[:, -1] = act.code
            a0[:, -1] = add_row[:, -1]
            a1[:, -1] = -1
            rel1[:, -1] = 0
        self.op = op.ravel()
        self.args = np.stack((a0.ravel(), a1.ravel()))        # (2, rows): a0, a1
        self.rel = np.stack((rel0.ravel(), rel1.ravel()))     # 1: relative to the first row
        # the ``low`` column (Rows._set_low): each row's own row and its non-leaf operand
        # rows, the least of them; the rows' own operands are relative (rows written
        # together), weights and starts absolute, inputs' rows per call (_write_dots)
        own = np.arange(self.op.size)
        self.low_rel = np.where(self.rel, self.args, own).min(axis=0)
        np.minimum(self.low_rel, own, out=self.low_rel)
        far = _FAR
        low_abs = np.full(shape, far)
        low_abs[:, m] = np.where(w_lv > 0, w_rows, far)
        if s_rows is not None:
            low_abs[:, 1] = np.where(s_lv > 0, s_rows, far)
        self.low_abs = low_abs.ravel() if (low_abs < far).any() else None
        self.out = (base[:, 0] + stride - 1) if act is not None else add_row[:, -1]
        self.w_lv, self.s_lv = w_lv, s_lv
        self.act = act
        self.x_imm = x_imm
        self._levels: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def levels(self, x_lv: list) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(level of every row, level of the results, which inputs are not leaves or
        None if all are) for inputs of levels ``x_lv``."""
        key = tuple(x_lv)
        found = self._levels.get(key)
        if found is None:
            if len(self._levels) >= _PATTERNS_KEPT:    # inputs of many levels: start afresh
                self._levels.clear()
            g_n = self.w_lv.shape[0]
            p_lv = np.maximum(self.w_lv, np.array(x_lv, np.int64)) + 1    # products
            acc_lv = _chain_levels(self.s_lv, p_lv)
            level = np.empty((g_n, self.stride), np.int64)
            level[:, self.mul] = p_lv
            level[:, self.add] = acc_lv
            out_lv = acc_lv[:, -1]
            if self.act is not None:
                out_lv = out_lv + 1
                level[:, -1] = out_lv
            inner = np.array(x_lv) > 0
            found = self._levels[key] = (level.ravel(), out_lv, inner if inner.any() else None)
        return found


def record_dots(t: Rows, w: list, x: list, starts: list, act: Op | None,
                memo: list | None = None) -> tuple[list | None, int]:
    """Rows of ``act(sum(map(mul, w[g], x), starts[g]))`` for every group ``g``, exactly
    as the scalar loop records them, written with a few NumPy operations.

    ``w``: G lists of n Values on ``t``; ``x``: n Values on ``t`` or n floats
    (immediates); ``starts``: G Values on ``t`` or G floats. Per group the rows are
    ``w0*x0, start+p0, w1*x1, acc+p1, ...`` then the activation (unary) if any; sums
    run left to right (``np.add.accumulate``), so values are bit-identical.

    ``memo``: a list the caller keeps between calls with the same weights (a layer's):
    the weights' rows and the row layout are worked out once per tape epoch.

    Returns
    -------
    (list of Value, int) or (None, 0)
        The G results and the first row; None if some operand is not a plain Value on
        ``t`` or a float (the caller then records the scalar loop).
    """
    out = record_layers(t, [(w, starts, act, memo)], x)
    return (None, 0) if out is None else (out[0], out[1][0])


def record_layers(t: Rows, layers: list[tuple[list, list, Op | None, list | None]],
                  x: list, stacks: dict | None = None) -> tuple[list, list[int]] | None:
    """:func:`record_dots` for a stack of layers ``(w, starts, act, memo)``, each
    reading the previous one's results (an MLP): one reservation, one write of every
    layer's rows, and Values only for the last layer's results. The rows are those of
    the layers called one by one.

    ``stacks``: a dict the caller keeps between calls with the same layers, where the
    layers' rows laid end to end (:class:`_StackLayout`) are kept.

    Returns (the last layer's results, each layer's first row), or None (the caller then
    records the layers one by one)."""
    x_imm = type(x[0]) is float
    if x_imm and any(type(v) is not float for v in x):
        return None
    total, n = 0, len(x)
    for w, starts, act, _ in layers:
        if len(w[0]) != n:              # sizes that do not chain: the layers say so
            return None
        if type(starts[0]) is float and any(type(v) is not float for v in starts):
            return None
        total += len(w) * (2 * n + (act is not None))
        n = len(w)
    first = t.reserve(total)            # may compact: operand rows are read after it
    if x_imm:
        x_rows, x_val, x_lv = None, np.array(x, np.float64), (0,) * len(x)
    else:
        xs = operand_rows(t, x)
        if xs is None:
            return None
        x_rows = np.array(xs[0], np.intp)
        x_val, x_lv = t.vals.obj[x_rows], tuple(xs[1])
    found = []
    for k, (w, starts, act, memo) in enumerate(layers):
        layout = _dot_layout(t, w, starts, act, x_imm and k == 0, memo)
        if layout is None:
            return None
        found.append(layout)
    stack = _stack_layout(stacks, found, x_lv)
    _write_stack(t, first, stack, [starts for _, starts, _, _ in layers], x_rows, x_val)
    return (_new_values(t, stack.out + first, stack.out_lv),
            [first + off for off in stack.offsets])


def _dot_layout(t: Rows, w: list, starts: list, act: Op | None, x_imm: bool,
                memo: list | None) -> tuple[_DotLayout, np.ndarray, np.ndarray | None] | None:
    """(layout, weight rows, start rows) of one layer on ``t``, from ``memo`` when the
    weights and starts are those of its last call in this tape epoch; other tapes'
    leaves get their current data in their mirror rows. None: the scalar path records."""
    if (memo and memo[0] is t and memo[1] == t.epoch and memo[2] == w and memo[3] == starts
            and memo[4].act is act and memo[4].x_imm == x_imm):
        layout, w_rows, s_rows, mirrors = memo[4:]
        vals = t.vals
        for row, leaf in mirrors:       # other tapes' leaves: their data now, as the loop
            vals[row] = leaf.data
        return layout, w_rows, s_rows
    g_n, n = len(w), len(w[0])
    s_imm = type(starts[0]) is float
    mirrors: list = []
    found = operand_rows(t, [v for ws in w for v in ws], mirrors)
    ss = None if s_imm else operand_rows(t, starts, mirrors)
    if found is None or (ss is None and not s_imm):
        return None
    w_rows = np.array(found[0], np.int64).reshape(g_n, n)
    s_rows = None if s_imm else np.array(ss[0], np.int64)
    s_lv = np.zeros(g_n, np.int64) if s_imm else np.array(ss[1], np.int64)
    layout = _DotLayout(g_n, n, act, w_rows, np.array(found[1], np.int64).reshape(g_n, n),
                        s_rows, s_lv, x_imm)
    if memo is not None:
        memo[:] = [t, t.epoch, [list(ws) for ws in w], list(starts), layout, w_rows, s_rows,
                   mirrors]
    return layout, w_rows, s_rows


_PATTERNS_KEPT = 16     # layouts kept per layer or stack, one per pattern of input levels


def _stack_layout(stacks: dict | None, found: list, x_lv: tuple) -> _StackLayout:
    """The :class:`_StackLayout` of the layers ``found`` (from :func:`_dot_layout`) for
    inputs of levels ``x_lv``: from ``stacks`` if it was built for these layouts."""
    if stacks is None:
        return _StackLayout(found, x_lv)
    stack = stacks.get(x_lv)
    if stack is None or any(a is not b[0] for a, b in zip(stack.layouts, found)):
        if stack is not None or len(stacks) >= _PATTERNS_KEPT:
            stacks.clear()              # the layers changed (or many input levels)
        stack = stacks[x_lv] = _StackLayout(found, x_lv)
    return stack


class _StackLayout:
    """The rows :func:`record_layers` writes, except what changes per call: each
    layer's :class:`_DotLayout` laid end to end, layer ``k + 1`` reading layer ``k``'s
    results as operands relative to the first row (as the layers' own rows are).

    Per call only the values, the first layer's input rows (or immediates) and
    immediate starts change. One gather reads every weight's and Value start's value.
    """

    def __init__(self, found: list, x_lv: tuple) -> None:
        self.layouts = tuple(layout for layout, _, _ in found)
        sizes = [layout.op.size for layout in self.layouts]
        self.offsets = [0, *itertools.accumulate(sizes[:-1])]
        self.size = sum(sizes)
        self.op = _joined([layout.op for layout in self.layouts])
        args, rel, low_rel, level = [], [], [], []
        lv: Any = list(x_lv)
        for k, (layout, off) in enumerate(zip(self.layouts, self.offsets)):
            lv_k, out_lv, inner = layout.levels(lv)
            if k == 0:                              # the layout's own arrays (one layer:
                a, r, low = layout.args, layout.rel, layout.low_rel     # no copies)
                self.x_inner = inner
            else:                                   # inputs: the layer before's results
                a = layout.args + off * layout.rel  # rows relative to the stack's first
                r = layout.rel.copy()
                low = layout.low_rel + off
                prev = self.offsets[k - 1] + self.layouts[k - 1].out
                shape = (-1, layout.stride)
                a[1].reshape(shape)[:, layout.mul] = prev
                r[1].reshape(shape)[:, layout.mul] = 1
                products = low.reshape(shape)[:, layout.mul]
                np.minimum(products, prev, out=products)     # never leaves (levels >= 1)
            args.append(a)
            rel.append(r)
            low_rel.append(low)
            level.append(lv_k)
            lv = out_lv.tolist()
        self.args = _joined(args, axis=1)
        self.rel = _joined(rel, axis=1)
        self.low_rel = _joined(low_rel)
        self.low_abs = None                         # weights or starts not leaves
        if any(layout.low_abs is not None for layout in self.layouts):
            self.low_abs = _joined([np.full(layout.op.size, _FAR) if layout.low_abs is None
                                    else layout.low_abs for layout in self.layouts])
        self.level = _joined(level)
        self.out = self.offsets[-1] + self.layouts[-1].out
        self.out_lv = lv
        # one gather: the weights of every layer, then the starts that are Values
        rows = [w.ravel() for _, w, _ in found] + [s for _, _, s in found if s is not None]
        self.gather = _joined(rows)
        self.w_at, self.s_at, at = [], [], 0
        for _, w, _ in found:
            self.w_at.append(slice(at, at + w.size))
            at += w.size
        for _, _, s in found:
            self.s_at.append(None if s is None else slice(at, at + s.size))
            at += 0 if s is None else s.size
        self.immediates = found[0][0].x_imm or any(s is None for _, _, s in found)
        self.zeros = None if self.immediates else np.zeros(self.size)


def _joined(parts: list[np.ndarray], axis: int = 0) -> np.ndarray:
    """``np.concatenate(parts, axis)``, or the one part itself (not copied)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def _write_stack(t: Rows, first: int, stack: _StackLayout, starts: list,
                 x_rows: np.ndarray | None, x_val: np.ndarray) -> None:
    """Write the stack's rows from ``first`` on (reserved). ``x_rows`` None: the first
    layer's inputs are the immediates ``x_val``."""
    got = t.vals.obj[stack.gather]
    value = np.empty(stack.size)
    c = stack.zeros if stack.zeros is not None else np.zeros(stack.size)
    for k, (layout, off) in enumerate(zip(stack.layouts, stack.offsets)):
        shape = (-1, layout.stride)
        block = value[off: off + layout.op.size].reshape(shape)
        at = stack.s_at[k]
        s_val = got[at] if at is not None else np.array(starts[k], np.float64)
        prod = block[:, layout.mul]
        np.multiply(got[stack.w_at[k]].reshape(prod.shape), x_val, out=prod)
        acc = block[:, layout.add]
        acc[...] = prod
        acc[:, 0] += s_val                  # start + p0 (as p0 + start: the same bits)
        np.add.accumulate(acc, axis=1, out=acc)     # then acc + p1, ...: left to right
        if stack.immediates:
            c_block = c[off: off + layout.op.size].reshape(shape)
            if at is None:
                c_block[:, 1] = s_val
            if k == 0 and x_rows is None:
                c_block[:, layout.mul] = x_val
        act = layout.act
        if act is None:
            x_val = acc[:, -1]
            continue
        last = acc[:, -1]
        if act is RELU:     # ops.RELU's scalar rule, vectorized (-0.0 and nan kept)
            block[:, -1] = np.where(last < 0, 0.0, last)
        else:
            evaluate = act.evaluate
            block[:, -1] = [evaluate(s, 0.0) for s in last.tolist()]
        x_val = block[:, -1]
    args = stack.rel * first
    args += stack.args
    low = stack.low_rel + first
    if stack.low_abs is not None:
        np.minimum(low, stack.low_abs, out=low)
    if x_rows is not None:
        layout = stack.layouts[0]
        shape = (-1, layout.stride)
        args[1, : layout.op.size].reshape(shape)[:, layout.mul] = x_rows
        if stack.x_inner is not None:           # inputs that are not leaves
            products = low[: layout.op.size].reshape(shape)[:, layout.mul]
            np.minimum(products, np.where(stack.x_inner, x_rows, _FAR), out=products)
    t.write_rows(stack.op, args[0], args[1], c, value, stack.level, low)


def record_sum(t: Rows, terms: list, start: Any) -> Any:
    """Rows of ``sum(terms, start)`` (Values on ``t``; ``start`` a Value on ``t`` or a
    float), as the scalar loop records them; None if the scalar path must do it."""
    n = len(terms)
    first = t.reserve(n)
    s_imm = type(start) is float
    found = operand_rows(t, terms if s_imm else [start, *terms])
    if found is None:
        return None
    vals = t.vals.obj
    rows = np.array(found[0], np.int64)
    lv = np.array(found[1], np.int64)
    if s_imm:
        s_val, s_lv = start, 0
    else:
        s_row, s_val, s_lv = rows[0], vals[rows[0]], lv[0]
        rows, lv = rows[1:], lv[1:]
    acc = np.add.accumulate(np.concatenate(([s_val], vals[rows])))[1:]
    level = _chain_levels(s_lv, lv)
    own = first + np.arange(n)
    a0 = np.empty(n, np.int64)
    a1 = np.empty(n, np.int64)
    c = np.zeros(n)
    a0[1:] = own[:-1]
    a1[1:] = rows[1:]
    if s_imm:
        a0[0], a1[0], c[0] = rows[0], -1, start
    else:
        a0[0], a1[0] = s_row, rows[0]
    t.write_rows(np.full(n, ADD.code, np.int8), a0, a1, c, acc, level)
    return _new_values(t, own[-1:], level[-1:].tolist())[0]
