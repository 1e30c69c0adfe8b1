"""Compiled plans: record once, evaluate and differentiate many times.

A :class:`Plan` covers a fixed set of rows of a tape (all of them for
``Tape.forward()``, the ancestors of some outputs for a ``Function``) and renumbers
them compactly: *local* row ``i`` is tape row ``rows[i]``; after the rows come one
local row per distinct immediate constant, then a sink row that absorbs the writes
of unused operand slots. Values live in an array of shape ``(local rows,)`` for a
replay of the tape itself, or ``(local rows, B)`` for ``B`` samples at once.

The forward schedule runs level by level (a row's level is 1 + the highest level of
its operands, so every operand is ready), with three kinds of steps:

* one vectorized kernel per (level, op) over all rows of that op at that level;
* folded chains: a path of rows where each is the only reader of the one before and
  all are ``+``/``-`` (or all ``*``) is a running sum (product) of its side terms:
  chains of the same length ending at the same level become one 2-D
  ``np.cumsum``/``np.cumprod`` along the chain axis, which adds in the same order as
  the recording did, so results are bit-identical;
* guards (recorded comparisons) whose outcome is checked against the recording.

The backward schedule (:class:`Backward`) folds every single-reader chain, whatever
its ops, into a reversed cumulative product of link partials, and handles the other
rows one level group at a time with ``np.add.at``, as the eager sweep does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, NamedTuple

import numpy as np

from . import _graph, _kernels
from .ops import (
    ADD,
    BINARY,
    CUSTOM,
    DIFFERENTIABLE,
    GUARDS,
    MUL,
    OPS,
    READS_OPERANDS,
    SUB,
    Op,
)

_SUM_FAMILY = (ADD.code, SUB.code)
_SEQUENTIAL_MIN = 64      # mixed-op chains at least this long run row by row ...
_SEQUENTIAL_WIDTH = 8     # ... when their levels hold at most this many rows
_FOLD_MIN = 8             # the backward folds single-reader chains of at least this length
_BINARY = BINARY                # shared with tapegrad.ops: grows with defop()
_IS_SUM = np.zeros(BINARY.size, bool)   # by opcode: + and -
_IS_SUM[list(_SUM_FAMILY)] = True


def _run_sequential(step: _SequentialStep, values: np.ndarray) -> None:
    """Evaluate a recurrence row by row: Python floats through a memoryview for one
    sample (each op's scalar rule, exactly as recording computed it), rows of the
    value array for a batch."""
    if values.ndim == 1:
        v = memoryview(values)
        for code, i, j, r in zip(step.code, step.x, step.y, step.rows):
            rule = OPS[code]
            try:
                v[r] = rule.scalar(v[i], v[j])
            except (ArithmeticError, ValueError):
                v[r] = rule.evaluate(v[i], v[j])
    else:
        for code, i, j, r in zip(step.code, step.x, step.y, step.rows):
            values[r] = OPS[code].forward(values[i], values[j])


KEEP_PAGES_FROM = 1 << 15   # plans of this many local rows or more: sweeps of a MiB and more


def keep_pages() -> None:
    """Let big sweeps reuse memory between calls instead of page-faulting it anew.

    glibc's malloc serves a request above its mmap threshold with fresh pages from
    ``mmap``, and hands heap memory above its trim threshold back to the system on
    ``free``: every sweep would page-fault its value, partial and adjoint arrays again
    (about 0.65 ms per MB here; a 10^6-row chain peaks near 60 MB). The thresholds start
    at 128 KiB and rise to the size (trim: twice it) of any mmapped block freed, up to
    32 MiB, as they do when any NumPy program frees a big array: freeing one untouched
    block just below that raises them once and for all. One ``mmap``/``munmap`` pair,
    no page touched (the process may keep up to 64 MiB of freed heap); other
    allocators ignore it. Called for every big :class:`Backward` (a ``Function``'s
    gradient as well as ``backward()``): which state the thresholds are in otherwise
    depends on what the process did before (importing numba, for one, left a moons
    ``Function`` gradient page-faulting 625 times per call: 2.5x slower). Tuned to
    glibc; measured in ``benchmarks/bench_first.py``.
    """
    np.empty(31 << 20, np.uint8)


def _column(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``a`` with trailing unit axes so that it broadcasts against ``like``'s sample axis."""
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def accumulate(ufunc: np.ufunc, a: np.ndarray, in_place: bool = False) -> np.ndarray:
    """``ufunc.accumulate(a, axis=0)``: running sums/products down the first axis
    (written over ``a`` with ``in_place``).

    NumPy's accumulate runs element by element (about 4 ns each here); with many
    columns, one vectorized call per row is several times faster. Both combine the
    terms in the same order, so the results are identical.
    """
    if a.shape[0] < 2 or a[0].size < 256:
        return ufunc.accumulate(a, axis=0, out=a if in_place else None)
    out = a if in_place else np.empty_like(a)
    out[0] = a[0]
    for j in range(1, a.shape[0]):
        ufunc(out[j - 1], a[j], out=out[j])
    return out


class GuardError(RuntimeError):
    """A replay would take a different branch than the recording.

    A recorded comparison comes out differently with the new values, so the tape no
    longer describes the program. Record again (or keep the branch fixed). Raised by
    :meth:`Tape.forward` and by calls of a :class:`Function`.
    """


def _local_index(rows: np.ndarray):
    """A function from tape rows to their positions in ``rows`` (ascending), ``-1`` for
    rows not in it: a dense table over ``rows``' range when that is not much larger
    than ``rows``, else binary search."""
    n = rows.size
    if n == 0:
        return lambda tape_rows: np.full(np.shape(tape_rows), -1, np.int64)
    lo, hi = int(rows[0]), int(rows[-1])
    if hi - lo < 16 * n + 4096:
        table = np.full(hi - lo + 2, -1, np.int64)     # the last slot: out of range
        table[rows - lo] = np.arange(n)

        def dense(tape_rows: np.ndarray) -> np.ndarray:
            at = np.asarray(tape_rows, np.int64) - lo
            at[(at < 0) | (at > hi - lo)] = hi - lo + 1
            return table[at]
        return dense

    def search(tape_rows: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(rows, tape_rows), n - 1)
        return np.where(rows[at] == tape_rows, at, -1)
    return search


@dataclass
class _OpStep:
    rule: Op
    out: np.ndarray      # local rows written
    x: np.ndarray        # local rows of the operands (constants are rows too)
    y: np.ndarray


@dataclass
class _ChainStep:
    rule: Op             # ADD (sums) or MUL (products)
    out: np.ndarray      # (L, G) local rows: chain position (bottom first) x chain
    terms: np.ndarray    # (L + 1, G) local rows: the bottom's two operands, then sides
    sign: np.ndarray | None   # (L + 1, G) +-1 for sums with subtractions


@dataclass
class _SequentialStep:
    """A long single-reader chain of mixed ops (a recurrence such as x = tanh(x*w + b)):
    evaluated row by row with the ops' scalar rules, as the recording did."""

    out: np.ndarray      # local rows, in order
    code: list           # opcodes, operand rows and output rows as Python ints
    x: list
    y: list
    rows: list


@dataclass
class _GuardStep:
    rule: Op
    rows: np.ndarray     # local rows of the guards
    x: np.ndarray
    y: np.ndarray
    expect: np.ndarray   # recorded outcomes (1.0 / 0.0)


@dataclass
class Plan:
    """The forward schedule over a set of tape rows (structure only; see module doc)."""

    rows: np.ndarray                # tape rows covered, ascending (local i -> rows[i])
    const_values: np.ndarray        # values of the constant rows that follow them
    x: np.ndarray                   # operand 0 of each local row (local; sink if none)
    y: np.ndarray                   # operand 1
    op: np.ndarray                  # opcode of each covered row
    level: np.ndarray
    evaluated: np.ndarray           # local rows the plan computes (non-leaf, not given)
    leaves: np.ndarray              # local rows read from the tape or the caller
    steps: list = field(repr=False, default_factory=list)
    range_from: int = -1            # rows[range_from:] are consecutive tape rows (-1: unknown)

    @property
    def size(self) -> int:
        """Local rows including the constants and the sink."""
        return self.rows.size + self.const_values.size + 1

    @property
    def sink(self) -> int:
        return self.size - 1

    def local(self, tape_rows: np.ndarray) -> np.ndarray:
        """Local rows of tape rows that the plan covers."""
        return np.searchsorted(self.rows, tape_rows)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def build(cls, cols, rows: np.ndarray, given: np.ndarray, schedule: bool = True) -> Plan:
        """Plan computing the non-leaf ``rows`` (tape rows, ascending) from the others.

        ``given`` lists tape rows whose values the caller supplies (inputs); they must
        be leaves. Every operand of a covered non-leaf row must be covered. Without
        ``schedule`` the plan only serves a :class:`Backward` (no forward steps).
        """
        n = rows.size
        op = cols.op[rows]
        level = cols.level[rows]
        a0 = cols.a0[rows].astype(np.int64)
        a1 = cols.a1[rows].astype(np.int64)
        binary = _BINARY.take(op)
        # immediates become constant rows (distinct bit patterns, so -0.0 stays -0.0)
        needs = binary & ((a0 < 0) | (a1 < 0))
        consts = cols.const[rows][needs]
        bits, const_of = np.unique(consts.view(np.int64), return_inverse=True)
        const_values = bits.view(np.float64)
        sink = n + const_values.size
        const_row = np.full(n, sink, np.int64)
        const_row[needs] = n + const_of
        local = _local_index(rows)
        local_x, local_y = local(a0), local(a1)
        for args, found in ((a0, local_x), (a1, local_y)):
            if ((args >= 0) & (found < 0)).any():
                raise ValueError("plan rows must include every operand of the rows they cover")
        x = np.where(a0 >= 0, local_x, np.where(binary, const_row, sink))
        y = np.where(a1 >= 0, local_y, np.where(binary, const_row, sink))
        is_given = np.zeros(n, bool)
        is_given[local(given)] = True
        evaluated = np.flatnonzero((level > 0) & ~is_given)
        leaves = np.flatnonzero((level == 0) | is_given)
        plan = cls(rows, const_values, x, y, op, level, evaluated, leaves)
        if schedule:
            custom = evaluated[op[evaluated] == CUSTOM.code]
            if custom.size:
                raise ValueError(
                    f"row {int(rows[custom[0]])} was made with Value(data, _children, _op): "
                    "the user computed its value, so a replay cannot recompute it "
                    "(Tape.forward, Function). Record such code again for new values, or "
                    "build the op from tapegrad's ops")
            plan.steps = plan._schedule(cols)
        return plan

    @classmethod
    def for_backward(cls, cols, lo: int, hi: int) -> Plan:
        """Plan of the rows a backward of row ``hi - 1`` sweeps: the leaves before ``lo``
        that the interval reads (ascending), then every row of ``[lo, hi)``, which the
        caller knows to be closed under non-leaf operands (:func:`_graph.closure_start`).

        The interval's columns are read as slices, operands are renumbered by
        arithmetic and each immediate gets a constant row of its own: no sorting, so
        this costs a few passes over the interval (no forward schedule). Local rows are
        int32 where they fit: half the pages to touch on a first call."""
        span = hi - lo
        index = np.int32 if 4 * span + 2 < 2**31 else np.int64
        args = [col[lo:hi] for col in (cols.a0, cols.a1)]
        outside = []                       # slots that read a leaf before ``lo``
        for a in args:
            below = a < lo
            below ^= a < 0                 # not an immediate or an unused slot
            outside.append(np.flatnonzero(below))
        leaves = _graph.unique(np.concatenate([a[o] for a, o in zip(args, outside)]))
        nl = leaves.size                   # distinct rows before lo: nl <= lo
        n = nl + span
        rows = np.arange(lo - nl, hi, dtype=index)
        rows[:nl] = leaves
        op = np.concatenate((cols.op[leaves], cols.op[lo:hi]))
        level = np.concatenate((cols.level[leaves], cols.level[lo:hi]))
        xy, empty = [], []
        for a, o in zip(args, outside):
            local = np.empty(n, index)
            np.add(a, nl - lo, out=local[nl:], casting="unsafe")
            if o.size:
                local[nl + o] = np.searchsorted(leaves, a[o])
            imm = np.empty(n, bool)        # an immediate or no operand (all of a leaf's)
            imm[:nl] = True
            np.less(a, 0, out=imm[nl:])
            xy.append(local)
            empty.append(imm)
        x, y = xy
        x_imm, y_imm = empty
        # an immediate gets a constant row only where the partials read it (x * 3 does,
        # x + 3 does not); other empty slots point at the sink. Leaves (op 0) read none.
        need = x_imm | y_imm
        need &= (_BINARY & READS_OPERANDS).take(op)
        at = np.flatnonzero(need)
        const_values = cols.const[lo - nl: hi][at]      # local row i <- tape row lo - nl + i
        sink = n + at.size
        np.copyto(x, sink, where=x_imm)
        np.copyto(y, sink, where=y_imm)
        const_rows = np.arange(n, sink, dtype=index)
        on_x = x_imm[at]
        x_side = np.count_nonzero(on_x)
        if x_side == at.size:                # every immediate in slot 0 (3 * x): no masks
            x[at] = const_rows
        elif x_side == 0:                    # every one in slot 1 (x * 3)
            y[at] = const_rows
        else:
            x[at[on_x]] = const_rows[on_x]
            on_x = ~on_x
            y[at[on_x]] = const_rows[on_x]
        if np.count_nonzero(level[nl:]) == span:         # no leaf inside the interval
            evaluated = np.arange(nl, n, dtype=index)
            plan_leaves = np.arange(nl, dtype=index)
        else:
            evaluated = np.flatnonzero(level > 0)
            plan_leaves = np.flatnonzero(level == 0)
        return cls(rows, const_values, x, y, op, level, evaluated, plan_leaves,
                   range_from=nl)

    def same_structure(self, other: Plan) -> bool:
        """Whether ``other`` has this plan's ops and local operands (so a
        :class:`Backward` of one serves the other): true for the same graph recorded
        again elsewhere on the tape."""
        return (self.op.size == other.op.size and self.const_values.size ==
                other.const_values.size and np.array_equal(self.op, other.op)
                and np.array_equal(self.x, other.x) and np.array_equal(self.y, other.y))

    def _fan(self) -> np.ndarray:
        return _graph.consumers(self.x[self.evaluated], self.y[self.evaluated], self.size)

    def _forward_chains(self, fan: np.ndarray) -> list[np.ndarray]:
        """Paths of single-reader ``+``/``-`` rows (sums) and of ``*`` rows (products)."""
        n = self.rows.size
        is_eval = np.zeros(self.size, bool)
        is_eval[self.evaluated] = True
        op = np.concatenate((self.op, np.zeros(self.size - n, self.op.dtype)))
        single = is_eval & (fan == 1)
        paths = []
        for family in (_SUM_FAMILY, (MUL.code,)):
            member = is_eval & np.isin(op, family)
            pred = np.full(self.size, -1, np.int64)
            # a row continues a path through slot 0, or through slot 1 unless it subtracts
            for operand, allowed in ((self.x, np.ones(n, bool)), (self.y, self.op != SUB.code)):
                ok = member[:n] & allowed & (pred[:n] < 0)
                ok &= member[operand] & single[operand]
                pred[:n][ok] = operand[ok]
            paths += _graph.chains(pred)
        return paths

    def _sequential_chains(self, fan: np.ndarray, folded: np.ndarray) -> list[np.ndarray]:
        """Long chains of single-reader rows of any ops in narrow levels (recurrences)."""
        n = self.rows.size
        free = np.zeros(self.size, bool)
        free[self.evaluated] = True
        free[:n] &= ~np.isin(self.op, list(GUARDS))
        free &= ~folded
        width = np.bincount(self.level[self.evaluated], minlength=int(self.level.max()) + 1)
        narrow = np.zeros(self.size, bool)
        narrow[:n] = width[self.level] <= _SEQUENTIAL_WIDTH
        member = free & narrow
        pred = np.full(self.size, -1, np.int64)
        for operand in (self.x, self.y):
            ok = member[:n] & (pred[:n] < 0) & member[operand] & (fan[operand] == 1)
            pred[:n][ok] = operand[ok]
        return [p for p in _graph.chains(pred) if p.size >= _SEQUENTIAL_MIN]

    def _schedule(self, cols) -> list:
        fan = self._fan()
        steps: dict[int, list] = {}
        folded = np.zeros(self.size, bool)
        by_shape: dict[tuple[int, int, int], list[np.ndarray]] = {}
        paths = self._forward_chains(fan)
        if paths:                             # thousands of short paths: keys in one go
            flat = np.concatenate(paths)
            folded[flat] = True
            sizes = np.fromiter((p.size for p in paths), np.intp, len(paths))
            ends = np.cumsum(sizes)
            family = np.where(np.isin(self.op[flat[ends - sizes]], _SUM_FAMILY),
                              ADD.code, MUL.code)
            keys = zip(self.level[flat[ends - 1]].tolist(), sizes.tolist(), family.tolist())
            for key, path in zip(keys, paths):
                by_shape.setdefault(key, []).append(path)
        for (key, length, family), paths in by_shape.items():
            out = np.ascontiguousarray(np.array(paths).T)   # a strided index scatters 2x slower
            terms = np.empty((length + 1, out.shape[1]), np.int64)
            sign = np.ones(terms.shape)
            bottom = out[0]
            terms[0] = self.x[bottom]
            terms[1] = self.y[bottom]
            sign[1] = np.where(self.op[bottom] == SUB.code, -1.0, 1.0)
            for j in range(1, length):
                row, prev = out[j], out[j - 1]
                from_x = self.x[row] == prev
                terms[j + 1] = np.where(from_x, self.y[row], self.x[row])
                sign[j + 1] = np.where(self.op[row] == SUB.code, -1.0, 1.0)
            rule = OPS[family]
            steps.setdefault(key, []).append(_ChainStep(
                rule, out, terms, sign if family == ADD.code and (sign < 0).any() else None))
        for path in self._sequential_chains(fan, folded):
            folded[path] = True
            key = int(self.level[path[-1]])
            steps.setdefault(key, []).append(_SequentialStep(
                path, self.op[path].tolist(), self.x[path].tolist(), self.y[path].tolist(),
                path.tolist()))
        rest = self.evaluated[~folded[self.evaluated]]
        order = rest[np.lexsort((self.op[rest], self.level[rest]))]
        keys = np.stack([self.level[order], self.op[order]], axis=1)
        cut = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
        groups = _graph.pieces(order, np.concatenate(([0], cut, [order.size])))
        for group in groups if order.size else []:
            code = int(self.op[group[0]])
            rule = OPS[code]
            key = int(self.level[group[0]])
            if code in GUARDS:
                expect = cols.value[self.rows[group]].copy()
                steps.setdefault(key, []).append(
                    _GuardStep(rule, group, self.x[group], self.y[group], expect))
            else:
                steps.setdefault(key, []).insert(0, _OpStep(rule, group, self.x[group],
                                                            self.y[group]))
        return [step for key in sorted(steps) for step in steps[key]]

    # -- running ------------------------------------------------------------------------

    def new_values(self, batch: int | None = None) -> np.ndarray:
        """A value array, ``(size,)`` or ``(size, batch)``, with the constants filled in."""
        values = np.empty((self.size,) if batch is None else (self.size, batch))
        values[self.rows.size: self.sink] = _column(self.const_values, values)
        values[self.sink] = 0.0
        return values

    def run(self, values: np.ndarray, describe=None, timing=None,
            anomaly: bool = False) -> None:
        """Compute every evaluated row of ``values`` (``(size,)`` or ``(size, B)``) in place.

        Leaf rows must hold their values. Raises :class:`GuardError` at the first guard
        whose outcome differs from the recording; with ``anomaly``, FloatingPointError
        at the first row that comes out nan or inf. ``describe(row)`` names a tape row
        in those messages (label and scope).
        """
        describe = describe or (lambda row: "")
        with np.errstate(all="ignore"):
            for step in self.steps:
                start = perf_counter() if timing is not None else 0.0
                if type(step) is _OpStep:
                    values[step.out] = step.rule.forward(values.take(step.x, axis=0),
                                                         values.take(step.y, axis=0))
                elif type(step) is _SequentialStep:
                    _run_sequential(step, values)
                elif type(step) is _ChainStep:
                    terms = values.take(step.terms, axis=0)
                    if step.sign is not None:
                        terms *= _column(step.sign, terms)
                    ufunc = np.add if step.rule is ADD else np.multiply
                    values[step.out] = accumulate(ufunc, terms)[1:]
                else:
                    self._check(step, values, describe)
                if anomaly and type(step) is not _GuardStep:
                    self._check_finite(step, values, describe)
                if timing is not None:
                    name = {_ChainStep: f"{getattr(step, 'rule', ADD).name} chains",
                            _SequentialStep: "sequential chains"}.get(
                                type(step), getattr(step, "rule", ADD).name)
                    rows = step.rows if type(step) is _GuardStep else step.out
                    timing.op(name, np.size(rows), perf_counter() - start)

    def run_array(self, values: Any, be: Any, describe=None, anomaly: bool = False) -> Any:
        """:meth:`run` for a ``(size, B)`` array of another array API library, through
        backend ``be`` (:mod:`tapegrad._backend`); returns the values (a new array when
        the library's arrays are immutable). Same steps, same order, same results."""
        describe = describe or (lambda row: "")
        xp = be.xp
        for step in self.steps:
            kind = type(step)
            if kind is _OpStep:
                forward = be.rules(step.rule)[0]
                values = be.put(values, step.out,
                                forward(be.take(values, step.x), be.take(values, step.y)))
            elif kind is _SequentialStep:
                for code, i, j, r in zip(step.code, step.x, step.y, step.rows):
                    values[r, ...] = be.rules(OPS[code])[0](values[i, ...], values[j, ...])
            elif kind is _ChainStep:
                terms = be.take(values, step.terms)
                if step.sign is not None:
                    terms = terms * be.asarray(step.sign[..., None])
                acc = be.cumulative(step.rule is not ADD, terms)
                values = be.put(values, step.out, acc[1:, ...])
            else:
                now = be.rules(step.rule)[0](be.take(values, step.x), be.take(values, step.y))
                if bool(xp.any(now != be.asarray(step.expect[:, None]))):
                    self._check(step, be.to_numpy(values), describe)
            if anomaly and kind is not _GuardStep and not bool(
                    xp.all(xp.isfinite(be.take(values, step.out)))):
                self._check_finite(step, be.to_numpy(values), describe)
        return values

    def _check_finite(self, step, values: np.ndarray, describe) -> None:
        out = values[step.out]
        bad = ~np.isfinite(out)
        if not bad.any():
            return
        flat_rows = np.broadcast_to(_column(step.out, out), out.shape)[bad]
        local = int(flat_rows.min())                   # the earliest row that went bad
        row = int(self.rows[local])
        rule = OPS[self.op[local]]
        x = values[self.x[local]]
        y = values[self.y[local]]
        raise FloatingPointError(
            f"detect_anomaly: {rule.name} produced {values[local]} at row {row}"
            f"{describe(row)} during a replay; operands x = {x}"
            + (f", y = {y}" if rule.arity == 2 else ""))

    def _check(self, step: _GuardStep, values: np.ndarray, describe) -> None:
        now = step.rule.forward(values[step.x], values[step.y])
        differ = now != _column(step.expect, now)
        if not differ.any():
            return
        where = np.argwhere(differ)[0]
        g = int(where[0])
        row = int(self.rows[step.rows[g]])
        named = describe(row)
        sample = f" for sample {int(where[1])}" if now.ndim > 1 else ""
        now = now[tuple(where)]
        raise GuardError(
            f"replay diverged at row {row}{named} ({step.rule.name}: x {step.rule.symbol} y): "
            f"recorded {bool(step.expect[g])}, now {bool(now)}{sample}. The tape "
            "no longer describes the program for these values; record it again.")


@dataclass
class _FoldedChains:
    rows: np.ndarray     # (L, G) local rows: chain position, top first, x chain
    links: np.ndarray | None  # (L - 1, G) flat partial index of each row (top first,
                         # not the bottom) w.r.t. its predecessor; None: the slot-0
                         # partials of the block's own positions (``link_index``)
    side_cons: np.ndarray  # side edges: consumer rows, operand rows, flat partial index
    side_tgt: np.ndarray
    side_part: np.ndarray
    start: int = 0       # position of rows[0, 0] in ``order``
    # found on the first sweep (:meth:`Backward._constant_links`):
    ones_from: int | None = None   # links from this chain position on are all 1 (sums)
    side_scaled: np.ndarray | None = None  # side edges whose partial is not 1 (positions,
    side_scaled_part: np.ndarray | None = None  # flat partial index); None: all of them
    side_at: np.ndarray | None = None   # side consumers' flat positions in the running
                                        # product's first ``ones_from + 1`` rows

    def link_index(self, j: int | None = None) -> np.ndarray | slice:
        """Where the partials of the first ``j`` link rows (all: None) sit in the flat
        partials: an index array, or a slice when every link reads slot 0."""
        upper = self.rows.shape[0] - 1 if j is None else j
        if self.links is not None:
            return self.links[:upper]
        return slice(self.start, self.start + upper * self.rows.shape[1])


_DIFFERENTIABLE = DIFFERENTIABLE


def _single_reader_links(plan: Plan, rows: np.ndarray, in_rows: np.ndarray | slice,
                         fan: np.ndarray, index: type) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's predecessor on a single-reader chain and the operand slot it reads it
    through (``-1`` and 0 where none; ``None`` for the slots when every link reads slot
    0): its first operand with partials (among ``rows``, ``in_rows`` =
    :func:`_graph.as_slice` of them) that no other slot reads (``fan`` is 1)."""
    size = plan.size
    single = np.zeros(size, bool)      # constants and the sink have no partials: False
    single[in_rows] = fan[in_rows] == 1
    p0, p1 = plan.x[in_rows], plan.y[in_rows]
    ok0 = single[p0]
    ok1 = single[p1]
    ok1 &= ~ok0                        # slot 0 first
    pred = np.full(size, -1, index)
    on_y = bool(ok1.any())
    pred_slot = np.zeros(size, index) if on_y else None
    if isinstance(in_rows, slice):     # masked copies into views: no index arrays
        np.copyto(pred[in_rows], p0, where=ok0)
        if on_y:
            np.copyto(pred[in_rows], p1, where=ok1)
            np.copyto(pred_slot[in_rows], 1, where=ok1)
    else:
        pred[rows[ok0]] = p0[ok0]
        if on_y:
            pred[rows[ok1]] = p1[ok1]
            pred_slot[rows[ok1]] = 1
    return pred, pred_slot


def _fold_paths(plan: Plan, pred: np.ndarray, in_rows: np.ndarray | slice) -> list[np.ndarray]:
    """The single-reader chains the backward folds: :func:`_graph.runs` of ``pred``
    (recurrences of any ops), then the runs of the sum links (``+``/``-`` reading
    ``+``/``-``) among the rows left. The second pass finds sums whose rows interleave
    with other short paths, as a neuron's ``w * x`` rows interleave with its running
    sum when ``x`` has one reader (micrograd's order)."""
    paths = _graph.runs(pred, _FOLD_MIN)
    is_sum = np.zeros(plan.size, bool)
    is_sum[in_rows] = _IS_SUM.take(plan.op[in_rows])
    if len(paths) > 64:
        is_sum[np.concatenate(paths)] = False
    else:                               # a few (long) paths: slices, no index copies
        for path in paths:
            is_sum[_graph.as_slice(path)] = False
    sums = np.count_nonzero(is_sum)
    if sums < _FOLD_MIN:
        return paths
    linked = pred >= 0
    linked &= is_sum
    linked &= is_sum[pred]
    if np.count_nonzero(linked) < _FOLD_MIN - 1:
        return paths
    sum_pred = np.where(linked, pred, -1).astype(pred.dtype, copy=False)
    return paths + _graph.runs(sum_pred, _FOLD_MIN)


class _Partials:
    """How to compute the local partials of rows laid out in ``order`` (operands
    ``t0``, ``t1``): flat, slot 0 block then slot 1, in the layout's positions.

    Every partial is one entry of the *extended values* (:meth:`extended`): the values,
    then the constants partials take (``+``, ``-``, ``neg``: 1, -1, ...), then the
    partials of the other ops, computed per call from precomputed operand rows. The
    schedule's gather (:meth:`ready`) says which entry each position reads (m entries
    per slot, slot 1 only when asked for; ``*`` reads its other operand's value), so
    the partials are ONE ``np.take`` (:meth:`compute`), or are read where they lie by
    the compiled sweep. Built on first use.
    """

    def __init__(self, plan: Plan, order: np.ndarray | slice, t0: np.ndarray,
                 t1: np.ndarray, index: type = np.intp) -> None:
        self.plan, self.order, self.t0, self.t1 = plan, order, t0, t1
        self.m = t0.size                      # rows laid out (``order`` may be a slice)
        self.index = index                    # the gather's dtype (see _RowLayout)
        self.schedule: _PartialsSchedule | None = None

    def _rows_at(self, at: np.ndarray) -> np.ndarray:
        order = self.order
        return at + order.start if isinstance(order, slice) else order[at]

    def by_op(self) -> list[tuple[Op, np.ndarray]]:
        """(op, positions in :attr:`order`) of each op among the rows."""
        op = self.plan.op[self.order]
        present = np.zeros(256, bool)         # (a bincount would copy op to intp)
        present[op.view(np.uint8)] = True
        codes = np.flatnonzero(present)
        if codes.size <= 8:                  # a pass per op beats a sort of every row
            return [(OPS[int(c)], np.flatnonzero(op == c)) for c in codes.tolist()]
        by_op, cuts = _graph.level_groups(op, descending=False)
        return [(OPS[int(op[by_op[a]])], by_op[a:b])
                for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist())]

    def _schedule(self, slot1: bool) -> _PartialsSchedule:
        m, size = self.m, self.plan.size
        consts = [0.0]                          # slot 1 of unary ops: zero, as before
        gather = np.full((2 if slot1 else 1) * m, size, self.index)
        computed, gathered = [], set()
        for rule, at in self.by_op():
            if rule is MUL:
                gather[at] = self.t1[at]
                if slot1:
                    gather[m + at] = self.t0[at]
                gathered.add(rule)
                continue
            if not rule.reads:
                d = rule.partials(None, None, None)
                if all(np.ndim(v) == 0 for v in d):
                    for slot, v in enumerate(d[:rule.arity if slot1 else 1]):
                        if v not in consts:
                            consts.append(v)
                        gather[slot * m + at] = size + consts.index(v)
                    gathered.add(rule)
                    continue
            computed.append((rule, at))
        # the computed partials follow the constants: slot 0 of each op, then its slot 1
        tail = size + len(consts)
        steps = []
        for rule, at in computed:
            operands = "x" in rule.reads or "y" in rule.reads
            slots = 2 if rule.arity == 2 and slot1 else 1
            for slot in range(slots):
                gather[slot * m + at] = np.arange(tail + slot * at.size,
                                                  tail + (slot + 1) * at.size)
            steps.append((rule, tail, slots, at.size,
                          self.t0[at] if operands else None,
                          self.t1[at] if operands else None,
                          self._rows_at(at) if "o" in rule.reads else None))
            tail += slots * at.size
        # where the gather reads the constant 1 (-1: nowhere), see Backward._constant_links
        one = size + consts.index(1.0) if 1.0 in consts else -1
        return _PartialsSchedule(gather, np.array(consts, float), steps, tail, one, gathered)

    def ready(self, slot1: bool) -> _PartialsSchedule:
        """The schedule, built (again, with both slots) if it lacks what is asked for.
        Published whole: a thread sharing it sees one version or the other."""
        schedule = self.schedule
        if schedule is None or (slot1 and schedule.gather.size < 2 * self.m):
            schedule = self.schedule = self._schedule(slot1)
        return schedule

    def extended(self, values: np.ndarray, timing=None, slot1: bool = True,
                 schedule: _PartialsSchedule | None = None) -> np.ndarray:
        """The extended values that the schedule's gather reads (see the class doc),
        shaped ``(entries,) + values.shape[1:]``; with ``timing``, each computed op's
        time. Pass the ``schedule`` whose gather will read them (:meth:`ready`)."""
        s = schedule if schedule is not None else self.ready(slot1)
        n = values.shape[0]
        ext = np.empty((s.entries,) + values.shape[1:])
        ext[:n] = values
        ext[n: n + s.consts.size] = _column(s.consts, values)
        with np.errstate(all="ignore"):
            for rule, tail, slots, count, t0, t1, out in s.computed:
                start = perf_counter() if timing is not None else 0.0
                d = rule.partials(None if t0 is None else values.take(t0, axis=0),
                                  None if t1 is None else values.take(t1, axis=0),
                                  None if out is None else values.take(out, axis=0))
                for slot in range(slots):
                    ext[tail + slot * count: tail + (slot + 1) * count] = d[slot]
                if timing is not None:
                    timing.op(rule.name, count, perf_counter() - start)
        return ext

    def compute(self, values: np.ndarray, timing=None, slot1: bool = True) -> np.ndarray:
        """The partials (without ``slot1``: the slot 0 block only), shaped
        ``(blocks * m,) + values.shape[1:]``."""
        m = self.m
        slot1 = slot1 or timing is not None
        s = self.ready(slot1)
        ext = self.extended(values, timing, slot1, s)
        if timing is None:
            return ext.take(s.gather if slot1 else s.gather[:m], axis=0)
        part = np.empty((s.gather.size,) + values.shape[1:])   # the same take, op by op
        for rule, at in self.by_op():
            start = perf_counter()
            pos = np.concatenate((at, m + at))
            part[pos] = ext.take(s.gather[pos], axis=0)
            if rule in s.gathered:             # (computed ops: timed in ``extended``)
                timing.op(rule.name, at.size, perf_counter() - start)
        return part


class _PartialsSchedule(NamedTuple):
    """What :class:`_Partials` builds once (see its doc)."""

    gather: np.ndarray      # entry of the extended values each position reads
    consts: np.ndarray      # the constant partials, after the values
    computed: list          # (rule, first entry, slots, rows, x, y, out) per computed op
    entries: int            # size of the extended values
    one: int                # the entry holding the constant 1 (-1: none)
    gathered: set           # the ops whose partials are values or constants


@dataclass
class _RowLayout:
    """The layout the compiled sweep reads: every row with partials, ascending."""

    first: int              # the first row, when the rows are a range
    rows: np.ndarray        # local rows; empty when they are the range from ``first``
    x: np.ndarray           # their operands (constants and the sink included)
    y: np.ndarray           # (rows, x, y and the partials' gather: the plan's index width)
    slot1: bool             # whether some slot-1 operand is a row (else: slot 0 only)
    partials: _Partials


class Backward:
    """Reverse schedule of a plan for one output: adjoints of all its rows.

    The one backward schedule of tapegrad, for eager ``backward()`` (over the root's
    ancestors), compiled backward after a replay, and ``Function`` gradients. Two
    layouts of the same rows and partials serve it:

    * **Level groups** (the NumPy kernels). Single-reader chains of at least
      ``_FOLD_MIN`` rows whose rows follow one another are folded into a reversed
      cumulative product of their link partials (:func:`_fold_paths`, :meth:`_fold`);
      the other rows go one level group at a time, highest level first: one gather of
      the group's adjoints, one multiply by both slots' partials and one
      ``np.add.at`` (a slot whose operands are all constants or the sink is left out:
      their adjoints are not kept). All rows with partials are laid out once in
      :attr:`order`: the level groups first (highest level first, each a slice), then
      the folded chains, so every step of the sweep reads slices of the partials.
    * **Rows in order** (the numba kernels, :mod:`tapegrad._kernels`): one compiled
      pass from the last row to the first, ``adj[operand] += partial * adj[row]``.

    Each layout is built when first used (under a lock: a ``Function`` may be shared by
    threads); anomaly detection and the array API path use the level groups.

    ``exact``: every row of the plan is an ancestor of the output. When not, a reach
    mask travels with the adjoints so that rows that do not reach the output neither
    receive a gradient nor pass on ``0 * inf = nan``; :attr:`reached` holds it.
    ``None``: find out (every row with partials but the output has a reader with
    partials; following readers up from any row then ends at the output).
    """

    def __init__(self, plan: Plan, output: int, exact: bool | None = True) -> None:
        self.plan = plan
        self.output = output                  # local row
        self._last = threading.local()        # each thread's last sweep: reached, anomaly
        self._lock = threading.Lock()         # builds a layout once
        ev = plan.evaluated
        differentiable = _DIFFERENTIABLE.take(plan.op[_graph.as_slice(ev)])
        rows = ev if differentiable.all() else ev[differentiable]
        self.rows = rows                      # local rows with partials, ascending
        fan = None
        if exact is None:
            fan = self._fan()
            unread = fan[_graph.as_slice(rows)] == 0
            count = np.count_nonzero(unread)
            exact = count == 0 or (count == 1 and rows[int(unread.argmax())] == output)
        self.exact = exact
        self._keys: list[int] | None = None   # the level layout, once built
        self._row_layout: _RowLayout | None = None
        if plan.size >= KEEP_PAGES_FROM:
            keep_pages()
        if _kernels.compiled_sweep() is None:
            self._build_levels(fan)

    def _fan(self) -> np.ndarray:
        in_rows = _graph.as_slice(self.rows)
        # operands are local rows, constants or the sink: never negative
        return _graph.consumers(self.plan.x[in_rows], self.plan.y[in_rows], self.plan.size,
                                nonnegative=True)

    def _levels(self) -> None:
        """Build the level layout if it is not built yet."""
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    self._build_levels(None)

    @property
    def order(self) -> np.ndarray:
        """Local row of each position of the level layout (see the class doc)."""
        self._levels()
        return self._order

    @property
    def t0(self) -> np.ndarray:
        """Operand 0 (local row) of each position of :attr:`order`."""
        self._levels()
        return self._t0

    @property
    def t1(self) -> np.ndarray:
        """Operand 1 of each position of :attr:`order`."""
        self._levels()
        return self._t1

    @property
    def groups(self) -> dict[int, tuple[int, int]]:
        """Level -> (start, stop) positions in :attr:`order` of its unfolded rows."""
        self._levels()
        return self._groups

    @property
    def chains(self) -> dict[int, list[_FoldedChains]]:
        """Level -> the blocks of folded chains whose top rows sit at that level."""
        self._levels()
        return self._chains

    @property
    def keys(self) -> list[int]:
        """Levels of the level layout's steps (groups and folded blocks), highest first."""
        self._levels()
        return self._keys  # type: ignore[return-value]

    def _build_levels(self, fan: np.ndarray | None) -> None:
        plan, rows = self.plan, self.rows
        size = plan.size
        index = np.int32 if 2 * size < 2**31 else np.int64
        in_rows = _graph.as_slice(rows)       # a slice when the rows are a range: views
        if fan is None:
            fan = self._fan()
        pred, pred_slot = _single_reader_links(plan, rows, in_rows, fan, index)
        key = plan.level
        folded = np.zeros(size, bool)
        by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
        for path in _fold_paths(plan, pred, in_rows):
            folded[_graph.as_slice(path)] = True
            by_shape.setdefault((int(key[path[-1]]), path.size), []).append(path)
        rest = rows[~folded[in_rows]]
        by_level, starts = _graph.level_groups(key[rest])
        rest = rest[by_level]
        # ``order``: the level groups, then each block of folded chains (chain position,
        # top first, x chain) written in place; the blocks are views of it. intp: every
        # sweep gathers and scatters by it (int32 indices cost a cast each time)
        m = rest.size + sum(len(paths) * paths[0].size for paths in by_shape.values())
        order = np.empty(m, np.intp)
        order[: rest.size] = rest
        blocks, at = [], rest.size
        for paths in by_shape.values():
            out = order[at: at + len(paths) * paths[0].size].reshape(paths[0].size, len(paths))
            if len(paths) == 1:
                out[:, 0] = paths[0][::-1]                              # top first
            else:
                np.stack([path[::-1] for path in paths], axis=1, out=out)
            blocks.append(out)
            at += out.size
        t0, t1 = plan.x[order], plan.y[order]
        self._order, self._t0, self._t1 = order, t0, t1
        self._groups: dict[int, tuple[int, int]] = {
            int(key[rest[a]]): (a, b) for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())}
        self._chains: dict[int, list[_FoldedChains]] = {}
        at = rest.size                       # where each block's rows sit in ``order``
        for (k, _), out in zip(by_shape, blocks):
            # a block's operands are its slices of t0, t1; positions are ``at + offset``
            operands = [t[at: at + out.size].reshape(out.shape) for t in (t0, t1)]
            upper = out[:-1]
            # the operand slot each link reads (None: slot 0, all of them)
            slots = None if pred_slot is None else pred_slot[upper]
            links = None                     # every link in slot 0: positions at, at + 1, ...
            if slots is not None and slots.any():
                # intp, as every index the sweep reads per call (int32 costs a cast each)
                links = np.arange(at, at + upper.size, dtype=np.intp).reshape(upper.shape)
                links += slots * m
            side_c, side_t, side_p = [], [], []
            for slot, operand in enumerate(operands):
                use = operand < plan.rows.size   # not into constants or the sink
                if slots is not None:
                    use[:-1] &= slots != slot
                elif slot == 0:
                    use[:-1] = False
                side_c.append(out[use])
                side_t.append(operand[use])
                side_p.append(slot * m + at + np.flatnonzero(use))
            at += out.size
            self._chains.setdefault(k, []).append(_FoldedChains(
                out, links, *map(np.concatenate, (side_c, side_t, side_p)), at - out.size))
        self._sweep = self._group_steps(order, t0, t1, starts)
        # whether the sweep reads any slot-1 partial (a recurrence x = x * c + d reads
        # none: every link and side edge is slot 0); if not, it gathers half of them
        self._slot1_read = any(slots for *_, slots in self._sweep.values()) or any(
            ch.links is not None or bool((ch.side_part >= m).any())
            for chs in self._chains.values() for ch in chs)
        self._part = _Partials(plan, order, t0, t1)
        self._keys = sorted(set(self._groups) | set(self._chains), reverse=True)   # last

    def _group_steps(self, order: np.ndarray, t0: np.ndarray, t1: np.ndarray,
                     starts: np.ndarray) -> dict[int, tuple]:
        """Per level group (positions ``starts[g]:starts[g + 1]`` of ``order``): ``(a, b,
        rows, targets, slots)``. ``slots``: which operand slots the sweep scatters to (2:
        both, with ``targets`` slot 0's operands then slot 1's; 0 or 1: that slot alone):
        a slot that reads only constants and the sink is left out (their adjoints are not
        kept). Worked out for all groups at once: a random DAG has hundreds."""
        n, cuts = self.plan.rows.size, starts[:-1]
        if cuts.size == 0:
            return {}
        end = int(starts[-1])
        used = [np.logical_or.reduceat(t[:end] < n, cuts).tolist() for t in (t0, t1)]
        # both slots' operands, group by group: group [a, b) at [2a, a + b) and [a + b, 2b)
        sizes = np.diff(starts)
        pos = np.arange(end)
        paired = np.empty(2 * end, t0.dtype)
        paired[pos + np.repeat(cuts, sizes)] = t0[:end]
        paired[pos + np.repeat(starts[1:], sizes)] = t1[:end]
        steps = {}
        for (k, (a, b)), u0, u1 in zip(self._groups.items(), *used):
            slots = 2 if u0 and u1 else int(u1)
            tgt = paired[2 * a: 2 * b] if slots == 2 else (t0, t1)[slots][a:b]
            steps[k] = (a, b, order[a:b], tgt, slots)
        return steps

    def _rows_in_order(self) -> _RowLayout:
        """The compiled sweep's layout, built on first use."""
        layout = self._row_layout
        if layout is None:
            with self._lock:
                layout = self._row_layout
                if layout is None:
                    plan = self.plan
                    at = _graph.as_slice(self.rows)      # a range: views, no copies
                    x, y = plan.x[at], plan.y[at]
                    if isinstance(at, slice):
                        first, rows = at.start, x[:0]
                    else:
                        first, rows = 0, self.rows.astype(x.dtype, copy=False)
                    slot1 = bool((y < plan.rows.size).any())
                    # the gather in the plan's index width (int32 where it fits):
                    # the compiled loops read it per row; NumPy's take wants intp
                    layout = self._row_layout = _RowLayout(
                        first, rows, x, y, slot1, _Partials(plan, at, x, y, x.dtype.type))
        return layout

    @property
    def reached(self) -> np.ndarray | None:
        """The reach mask of this thread's last sweep (None when the plan is exact)."""
        return getattr(self._last, "reached", None)

    @property
    def anomaly_found(self) -> tuple[int, int, float, float] | None:
        """What this thread's last sweep with ``anomaly`` found (see :meth:`run`)."""
        return getattr(self._last, "anomaly", None)

    def by_op(self) -> list[tuple[Op, np.ndarray]]:
        """(op, positions in :attr:`order`) of each op among the rows (worked out when
        asked: the partials' schedule, the array API and the timed paths)."""
        self._levels()
        return self._part.by_op()

    def partials(self, values: np.ndarray, timing=None, slot1: bool = True) -> np.ndarray:
        """Local partials of the rows in :attr:`order`, flat: slot 0 block, then slot 1
        (without ``slot1``, the slot 0 block only)."""
        self._levels()
        return self._part.compute(values, timing, slot1)

    def _array_schedule(self) -> tuple:
        """Host index arrays the array API sweep reads (kept, so backends cache them)."""
        if getattr(self, "_array_rows", None) is None:
            m = self.order.size
            ops = [(rule, at, m + at) for rule, at in self.by_op()]   # slot 0, slot 1
            groups = {k: (self.order[a:b], self.t0[a:b], self.t1[a:b],
                          np.arange(a, b), np.arange(m + a, m + b))
                      for k, (a, b) in self.groups.items()}
            tops = {id(ch): ch.rows[:1] for chs in self.chains.values() for ch in chs}
            self._array_rows = (ops, groups, tops, np.array([self.output]))
        return self._array_rows

    def partials_array(self, values: Any, be: Any) -> Any:
        """:meth:`partials` for a ``(size, B)`` array of another library (backend ``be``)."""
        order, t0, t1 = self.order, self.t0, self.t1
        ops = self._array_schedule()[0]
        part = be.zeros(2 * order.size, values.shape[1])
        for rule, at, upper in ops:
            operands = "x" in rule.reads or "y" in rule.reads
            x = be.take(values, t0[at]) if operands else None
            y = be.take(values, t1[at]) if operands else None
            out = be.take(values, order[at]) if "o" in rule.reads else None
            d0, d1 = be.rules(rule)[1](x, y, out)
            part = be.put(part, at, d0)
            if rule.arity == 2:
                part = be.put(part, upper, d1)
        return part

    def run_array(self, values: Any, be: Any, anomaly: bool = False) -> Any:
        """:meth:`run` for a ``(size, B)`` array of another array API library, through
        backend ``be`` (:mod:`tapegrad._backend`): the same sweep in the same order."""
        _, groups, tops, seed = self._array_schedule()
        part = self.partials_array(values, be)
        adj = be.put(be.zeros(*values.shape), seed, 1.0)
        reach = None
        if not self.exact:
            reach = np.zeros(self.plan.size, bool)
            reach[self.output] = True
        for k in self.keys:
            for ch in self.chains.get(k, ()):
                top = tops[id(ch)]
                links = ch.link_index()
                if isinstance(links, slice):
                    links = np.arange(links.start, links.stop).reshape(ch.rows[1:].shape)
                seq = be.xp.concat((be.take(adj, top), be.take(part, links)), axis=0)
                adj = be.put(adj, ch.rows, be.cumulative(True, seq))
                if reach is not None:
                    reach[ch.rows] = reach[ch.rows[:1]]
                w = be.take(part, ch.side_part) * be.take(adj, ch.side_cons)
                if reach is not None:
                    live = reach[ch.side_cons]
                    w = be.zero_rows(w, ~live)
                    reach[ch.side_tgt[live]] = True
                adj = be.add_at(adj, ch.side_tgt, w)
            if k in groups:
                cons, g0, g1, lo, up = groups[k]
                g = be.take(adj, cons)
                w0, w1 = be.take(part, lo) * g, be.take(part, up) * g
                if reach is not None:
                    dead = ~reach[cons]
                    w0, w1 = be.zero_rows(w0, dead), be.zero_rows(w1, dead)
                    reach[g0[~dead]] = True
                    reach[g1[~dead]] = True
                adj = be.add_at(adj, g0, w0)
                adj = be.add_at(adj, g1, w1)
        self._last.reached = reach
        self._last.anomaly = (self._anomaly(be.to_numpy(adj), be.to_numpy(part), reach)
                              if anomaly else None)
        return adj

    def run(self, values: np.ndarray, timing=None, anomaly: bool = False,
            chain_rows: bool = True) -> np.ndarray:
        """Adjoints (shaped like ``values``) of every local row, seeded 1 at the output.

        With ``anomaly``, :attr:`anomaly_found` is set to the first row in sweep order
        whose finite adjoint times a local partial is nan or inf (see :meth:`_anomaly`).
        Without ``chain_rows``, the rows inside folded chains (evaluated rows with one
        reader) keep adjoint 0, which saves a scatter per chain: for callers that read
        leaves only. Adjoints of constant rows and of the sink are not kept.
        """
        kernel = _kernels.compiled_sweep()
        if kernel is not None and timing is None and not anomaly:
            return self._run_compiled(kernel, values)
        self._levels()
        if timing is not None:
            timing.lap("schedule")
        part = self.partials(values, timing, slot1=self._slot1_read or anomaly)
        if timing is not None:
            timing.lap("partials")
        t0, t1, sweep, chains = self._t0, self._t1, self._sweep, self._chains
        full = chain_rows or anomaly or not self.exact
        m = self.order.size
        pair = part.reshape((2 if part.shape[0] == 2 * m else 1, m) + part.shape[1:])
        adj = np.zeros(values.shape)
        adj[self.output] = 1.0
        reach = None
        if not self.exact:
            reach = np.zeros(self.plan.size, bool)
            reach[self.output] = True
        with np.errstate(all="ignore"):
            for k in self._keys:
                start = perf_counter() if timing is not None else 0.0
                for ch in chains.get(k, ()):
                    self._fold(ch, adj, part, reach, full)
                group = sweep.get(k)
                if group is not None:
                    a, b, cons, tgt, slots = group
                    g = adj.take(cons, axis=0)
                    w = (pair[:, a:b] if slots == 2 else part[slots * m + a: slots * m + b]) * g
                    if reach is not None:      # no 0 * inf = nan from rows off the root
                        dead = ~reach[cons]
                        if slots == 2:
                            w[:, dead] = 0.0
                        else:
                            w[dead] = 0.0
                        reach[t0[a:b][~dead]] = True
                        reach[t1[a:b][~dead]] = True
                    np.add.at(adj, tgt, w.reshape((-1,) + g.shape[1:]))
                if timing is not None:
                    size = sum(ch.rows.size for ch in chains.get(k, ()))
                    size += group[1] - group[0] if group is not None else 0
                    timing.groups.append((k, size, perf_counter() - start))
        if timing is not None:
            timing.lap("levels")
        self._last.reached = reach
        self._last.anomaly = self._anomaly(adj, part, reach) if anomaly else None
        return adj

    def _run_compiled(self, kernel: Any, values: np.ndarray) -> np.ndarray:
        """:meth:`run` by the compiled sweep over the rows in order (the numba kernels)."""
        layout = self._rows_in_order()
        schedule = layout.partials.ready(layout.slot1)
        ext = layout.partials.extended(values, schedule=schedule)
        samples = int(np.prod(values.shape[1:], dtype=np.intp))
        adj = np.zeros(values.shape)
        adj[self.output] = 1.0
        reach = np.zeros(0, bool)
        if not self.exact:
            reach = np.zeros(self.plan.size, bool)
            reach[self.output] = True
        kernel(layout.first, layout.rows, layout.x, layout.y, schedule.gather,
               ext.reshape(ext.shape[0], samples), adj.reshape(values.shape[0], samples),
               reach)
        self._last.reached = None if self.exact else reach
        self._last.anomaly = None
        return adj

    def _fold(self, ch: _FoldedChains, adj: np.ndarray, part: np.ndarray,
              reach: np.ndarray | None, full: bool) -> None:
        """Adjoints down one block of folded chains, then its side edges. A row's
        adjoint is its chain top's times the link partials down to it (a running
        product); where the remaining links are all 1 (a sum), the rows below share
        one adjoint and the product stops there. Without ``full``, the side edges read
        the running product and the chain rows' own adjoints are not written."""
        if ch.ones_from is None:
            self._constant_links(ch)
        j = ch.ones_from
        seq = np.empty((j + 1,) + ch.rows.shape[1:] + adj.shape[1:])
        seq[0] = adj[ch.rows[0]]
        links = ch.link_index(j)
        if isinstance(links, slice):
            seq[1:] = part[links].reshape(seq[1:].shape)
        else:
            part.take(links, axis=0, out=seq[1:])
        head = accumulate(np.multiply, seq, in_place=True)
        if full:
            adj[ch.rows[:j + 1]] = head
            adj[ch.rows[j + 1:]] = head[j]
            if reach is not None:
                reach[ch.rows] = reach[ch.rows[:1]]
            g = adj.take(ch.side_cons, axis=0)
        else:
            g = head.reshape((-1,) + adj.shape[1:]).take(ch.side_at, axis=0)
        if ch.side_scaled is None:
            g *= part.take(ch.side_part, axis=0)
        elif ch.side_scaled.size:
            g[ch.side_scaled] *= part.take(ch.side_scaled_part, axis=0)
        if reach is not None:
            live = reach[ch.side_cons]
            g[~live] = 0.0
            reach[ch.side_tgt[live]] = True
        np.add.at(adj, ch.side_tgt, g)

    def _constant_links(self, ch: _FoldedChains) -> None:
        """Fill in ``ch``'s :attr:`~_FoldedChains.ones_from`, ``side_scaled`` and
        ``side_at`` from which partials the schedule takes from the constant 1."""
        schedule = self._part.schedule
        one, gather = schedule.one, schedule.gather
        links = ch.link_index()
        at_links = gather[links]
        varies = np.flatnonzero(~(at_links.reshape(ch.rows[1:].shape) == one).all(axis=1))
        j = int(varies[-1]) + 1 if varies.size else 0
        scaled = np.flatnonzero(gather[ch.side_part] != one)
        if scaled.size < ch.side_part.size:
            ch.side_scaled, ch.side_scaled_part = scaled, ch.side_part[scaled]
        m, width = self.order.size, ch.rows.shape[1]
        flat = np.where(ch.side_part >= m, ch.side_part - m, ch.side_part) - ch.start
        ch.side_at = np.minimum(flat // width, j) * width + flat % width
        ch.ones_from = j               # last: other threads test it (a shared schedule)

    def _anomaly(self, adj: np.ndarray, part: np.ndarray,
                 reach: np.ndarray | None) -> tuple[int, int, float, float] | None:
        """(local row, slot, partial, adjoint) of the first row, in sweep order (highest
        level first, then the latest row), whose finite adjoint times the local partial
        with respect to an operand row is nan or inf; None if there is none."""
        plan, rows, m = self.plan, self.order, self.order.size
        g = adj[rows]
        p0, p1 = part[:m], part[m:]
        used0 = self.t0 < plan.rows.size      # an operand row (not a constant, the sink)
        used1 = self.t1 < plan.rows.size
        with np.errstate(all="ignore"):
            bad0 = np.isfinite(g) & ~np.isfinite(p0 * g)
            bad1 = np.isfinite(g) & ~np.isfinite(p1 * g)
        if g.ndim > 1:
            bad0, bad1 = bad0.any(axis=1), bad1.any(axis=1)
        bad0 &= used0
        bad1 &= used1
        if reach is not None:
            bad0 &= reach[rows]
            bad1 &= reach[rows]
        bad = np.flatnonzero(bad0 | bad1)
        if bad.size == 0:
            return None
        first = bad[np.lexsort((rows[bad], plan.level[rows[bad]]))[-1]]
        slot = 0 if bad0[first] else 1
        p = (p0 if slot == 0 else p1)[first]
        gf = g[first]
        if np.ndim(gf):
            k = int(np.flatnonzero(~np.isfinite(p * gf))[0])
            p, gf = p[k], gf[k]
        return int(rows[first]), slot, float(p), float(gf)


class Directional:
    """Forward (JVP) and reverse (VJP) sweeps of a plan over many directions at once.

    Reuses a :class:`Backward`'s layout and local partials (:meth:`Backward.partials`)
    and sweeps only the rows on a path from some source (inputs) to some target
    (outputs): ascending level groups for tangents, ``t[row] = p0 * t[x] + p1 * t[y]``;
    descending ones for adjoints, ``np.add.at`` as in :meth:`Backward.run`. Tangents
    and adjoints carry a trailing axis of directions after the value array's shape:
    ``(size, K)`` for one sample, ``(size, B, K)`` for a batch.

    :meth:`forward` and :meth:`reverse` sweep every row, level by level (and take an
    anomaly ``check``); :attr:`condensed` does the same sweeps over the graph with
    single-reader rows eliminated, on arrays over its few nodes only.
    """

    def __init__(self, backward: Backward, sources: np.ndarray, targets: np.ndarray) -> None:
        plan = backward.plan
        self.backward = backward
        self.sources = np.asarray(sources, np.int64)
        self.targets = np.asarray(targets, np.int64)
        n = plan.rows.size
        x = np.where(plan.x < n, plan.x, -1).astype(np.int64)
        y = np.where(plan.y < n, plan.y, -1).astype(np.int64)
        live = (_graph.descendants(x, y, plan.level, self.sources, n)
                & _graph.ancestors(x, y, plan.level, self.targets))
        self.live = live                  # plan rows on a path from a source to a target
        order = backward.order
        pos = np.flatnonzero(live[order])
        self.positions = pos              # their positions in ``backward.order``
        by_level, starts = _graph.level_groups(plan.level[order[pos]], descending=False)
        pos = pos[by_level]
        self.groups = [pos[a:b] for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]
        self.m = order.size
        # slots reading an immediate or nothing: their partial (pow's d/dy of x ** 2 at
        # x < 0 is nan) must not meet the zero tangent there
        self.unused = np.flatnonzero(np.concatenate((backward.t0, backward.t1)) >= n)
        self._condensed: _Condensed | None = None

    @property
    def condensed(self) -> _Condensed:
        """The sweep with single-reader rows eliminated (:class:`_Condensed`), built once."""
        if self._condensed is None:
            self._condensed = _Condensed(self)
        return self._condensed

    def partials(self, values: np.ndarray) -> np.ndarray:
        """Local partials of every row with partials (:meth:`Backward.partials`), zero
        in slots that do not read a row."""
        part = self.backward.partials(values)
        part[self.unused] = 0.0
        return part

    def forward(self, part: np.ndarray, tangents: np.ndarray, check=None) -> np.ndarray:
        """Propagate ``tangents`` (seeded at the sources, zero elsewhere) in place."""
        order, t0, t1, m = self.backward.order, self.backward.t0, self.backward.t1, self.m
        with np.errstate(all="ignore"):
            for p in self.groups:
                w0 = part[p][..., None] * tangents[t0[p]]
                w1 = part[m + p][..., None] * tangents[t1[p]]
                if check is not None:
                    check(p, w0, w1, tangents)
                tangents[order[p]] = w0 + w1
        return tangents

    def reverse(self, part: np.ndarray, adjoints: np.ndarray, check=None) -> np.ndarray:
        """Propagate ``adjoints`` (seeded at the targets) to every row, in place."""
        order, t0, t1, m = self.backward.order, self.backward.t0, self.backward.t1, self.m
        with np.errstate(all="ignore"):
            for p in reversed(self.groups):
                g = adjoints[order[p]]
                w0 = part[p][..., None] * g
                w1 = part[m + p][..., None] * g
                if check is not None:
                    check(p, w0, w1, adjoints)
                np.add.at(adjoints, t0[p], w0)
                np.add.at(adjoints, t1[p], w1)
        return adjoints


_DENSE_FILL = 0.125     # a condensed step multiplies a dense block when this full or more
_BLAS_ONE_THREAD = 1 << 18   # multiply-adds per matrix product kept below OpenBLAS's
                             # threading threshold: its threads stall on a busy core


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (stacked), in row blocks of ``a`` small enough for one BLAS thread:
    about as fast on an idle machine, and 5-20x faster when another process holds a
    core (measured: 0.16 ms against 0.8-2.9 ms for 100 x 200 x 100)."""
    r, inner = a.shape[-2:]
    step = max(1, _BLAS_ONE_THREAD // max(1, inner * b.shape[-1]))
    if step >= r:
        return a @ b
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (r, b.shape[-1]))
    for i in range(0, r, step):
        np.matmul(a[..., i: i + step, :], b, out=out[..., i: i + step, :])
    return out


@dataclass
class _CondensedStep:
    """The condensed edges into the roots of one condensed level."""

    roots: np.ndarray      # condensed nodes written (ascending)
    leaves: np.ndarray     # distinct condensed nodes read (ascending)
    lo: int                # this step's edges: ``weights[lo:hi]``, sorted by (root, leaf)
    hi: int
    edge_leaf: np.ndarray  # (e,) condensed node read by each edge
    edge_root: np.ndarray  # (e,) position in ``roots`` of each edge's root
    root_starts: np.ndarray   # first edge of each root (every root has one)
    ri: np.ndarray         # (root, leaf) positions of each distinct pair in the block
    ci: np.ndarray
    pair_starts: np.ndarray | None   # first edge of each pair when pairs repeat
    by_leaf: np.ndarray    # edges sorted by leaf, the first of each leaf's run, its leaf
    leaf_starts: np.ndarray
    leaf_runs: np.ndarray
    dense: bool            # multiply a dense (roots x leaves) block (BLAS)


class _Condensed:
    """A :class:`Directional`'s sweep with every single-reader row eliminated.

    A swept row read by exactly one swept row (once) and not a target passes its
    tangent on to that reader only, so its reader's *root* (follow single readers up
    to a row that is read more often, or a target) sees each of the row's own operands
    through the product of the local partials on the path. Those products are found
    once where the links' partials are constants (the reader's op reads nothing:
    ``+ - neg``) and by pointer jumping over the other links on each call (``log2``
    of the deepest such path rounds, whatever the ops); the
    tangents then travel only over the roots, the live sources and the edges from
    them to the roots (weight: path product times the edge's partial), one step per
    level of that condensed graph: a dense block product where the step's edges fill
    enough of it, else gather, scale and a sorted ``np.add.reduceat``. The sum chains
    of a dot product, a recurrence's states and an expression tree each become one
    edge per operand they read from outside.
    """

    def __init__(self, sweep: Directional) -> None:
        bw, plan = sweep.backward, sweep.backward.plan
        n, size, m = plan.rows.size, plan.size, sweep.m
        pos = sweep.positions
        rows = bw.order[pos]
        sources = sweep.sources
        swept = np.zeros(size, bool)
        swept[rows] = True
        node = swept.copy()
        live_src = sources[sweep.live[sources]]
        node[live_src] = True
        cons, opnd, part = [], [], []
        for slot, operand in ((0, bw.t0), (1, bw.t1)):
            o = operand[pos]
            keep = (o < n) & node[o]
            cons.append(rows[keep])
            opnd.append(o[keep].astype(np.int64))
            part.append(slot * m + pos[keep])
        cons, opnd, part = (np.concatenate(a).astype(np.int64) for a in (cons, opnd, part))
        reads = np.bincount(opnd, minlength=size)
        gone = swept & (reads == 1)
        gone[sweep.targets] = False
        tree = gone[opnd]                      # edge into an eliminated row: its parent link
        # eliminated rows: the ones read by an eliminated row (internal) first, then the rest
        child_of = np.full(size, -1, np.int64)
        child_of[opnd[tree]] = cons[tree]
        link_part = np.zeros(size, np.int64)
        link_part[opnd[tree]] = part[tree]
        internal = np.zeros(size, bool)
        internal[cons[tree]] = True
        internal &= gone
        # links whose partial is a constant (the reader's op reads nothing: + - neg) are
        # multiplied out here; only the others (variable) are jumped over on each call
        link_slot = np.zeros(size, np.int64)
        link_slot[opnd[tree]] = part[tree] // m
        const = np.zeros(size)
        is_const = np.zeros(size, bool)
        reader_op = plan.op[np.maximum(child_of, 0)]
        for code in np.unique(reader_op[gone]).tolist():
            rule = OPS[int(code)]
            if set(rule.reads) & set("xyo"):
                continue
            vals = np.array(rule.scalar_partials(0.0, 0.0, 0.0), float)
            at = gone & (reader_op == code)
            const[at] = vals[link_slot[at]]
            is_const[at] = True
        var = np.flatnonzero(gone & ~is_const)
        k = var.size
        var_id = np.full(size, k, np.int64)      # index into the path products; k holds 1.0
        var_id[var] = np.arange(k)
        # each eliminated row: the first variable row up from it (itself included), or the
        # root, and the product of the constant links on the way (``gain``)
        up_const = np.where(gone & is_const, child_of, -1)
        up_const[up_const >= 0] = np.where(is_const[up_const[up_const >= 0]] &
                                           gone[up_const[up_const >= 0]],
                                           up_const[up_const >= 0], -1)
        cells = np.flatnonzero(gone & is_const)
        cell_id = np.full(size + 1, cells.size, np.int64)
        cell_id[cells] = np.arange(cells.size)
        gain = np.append(const[cells], 1.0)
        for nodes, jump in _graph.jump_rounds(cell_id[np.where(up_const[cells] >= 0,
                                                                up_const[cells], size)]):
            gain[nodes] *= gain[jump]
        top = np.arange(size)
        top[cells] = np.where(up_const[cells] >= 0, up_const[cells], cells)
        top = _graph.forest_roots(top)
        anchor = np.full(size, k, np.int64)
        anchor[var] = var_id[var]
        above = child_of[top[cells]]             # a variable eliminated row, or a root
        anchor[cells] = np.where(above >= 0, var_id[np.maximum(above, 0)], k)
        factor = np.ones(size)
        factor[cells] = gain[:-1]
        up = child_of[var]
        up_gone = gone[np.maximum(up, 0)] & (up >= 0)
        self.var_part = link_part[var]
        self.var_gain = np.where(up_gone, factor[np.maximum(up, 0)], 1.0)
        self.rounds = _graph.jump_rounds(np.where(up_gone, anchor[np.maximum(up, 0)], k))
        self.n_var = k
        parent = np.arange(size)
        parent[opnd[tree]] = cons[tree]
        root = _graph.forest_roots(parent)
        # condensed graph: roots and live sources; node ``count`` is an always-zero slot
        nodes = np.flatnonzero(node & ~gone)
        count = nodes.size
        node_id = np.full(size + 1, count, np.int64)
        node_id[nodes] = np.arange(count)
        self.count = count
        self.source_nodes = node_id[sources]
        self.target_nodes = node_id[sweep.targets]
        edge = ~tree
        head = node_id[root[cons[edge]]]
        tail = node_id[opnd[edge]]
        c = cons[edge]
        w_path, w_part, w_gain = np.where(gone[c], anchor[c], k), part[edge], factor[c]
        level = _graph.dag_levels(tail, head, plan.level[nodes], count)
        order = np.lexsort((tail, head, level[head]))
        head, tail = head[order], tail[order]
        self.w_path, self.w_part = w_path[order], w_part[order]
        self.w_gain = w_gain[order] if (w_gain != 1.0).any() else None
        self.steps: list[_CondensedStep] = []
        cuts = np.flatnonzero(np.diff(level[head])) + 1
        for lo, hi in zip([0] + cuts.tolist(), cuts.tolist() + [head.size]):
            h, t = head[lo:hi], tail[lo:hi]
            roots, ri = np.unique(h, return_inverse=True)
            leaves, ci = np.unique(t, return_inverse=True)
            pair = ri * leaves.size + ci
            first = np.concatenate(([True], pair[1:] != pair[:-1]))
            pair_starts = np.flatnonzero(first)
            root_starts = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
            by_leaf = np.argsort(t, kind="stable")
            ts = t[by_leaf]
            leaf_starts = np.flatnonzero(np.concatenate(([True], ts[1:] != ts[:-1])))
            self.steps.append(_CondensedStep(
                roots, leaves, lo, hi, t, ri, root_starts, ri[first], ci[first],
                None if first.all() else pair_starts, by_leaf, leaf_starts,
                ts[leaf_starts], roots.size * leaves.size * _DENSE_FILL <= pair_starts.size))

    def weights(self, part: np.ndarray) -> np.ndarray:
        """Weight of every condensed edge: the partials' product along its path."""
        k = self.n_var
        paths = np.empty((k + 1,) + part.shape[1:])
        paths[:k] = part[self.var_part]
        if k:
            paths[:k] *= _column(self.var_gain, paths[:k])
        paths[k] = 1.0
        for nodes, jump in self.rounds:
            paths[nodes] *= paths[jump]
        w = paths[self.w_path] * part[self.w_part]
        if self.w_gain is not None:
            w *= _column(self.w_gain, w)
        return w

    @staticmethod
    def _block(step: _CondensedStep, w: np.ndarray) -> np.ndarray:
        """The step's edges as a dense ``(roots, leaves)`` block (``(B, roots, leaves)``)."""
        if step.pair_starts is not None:
            w = np.add.reduceat(w, step.pair_starts, axis=0)
        if w.ndim == 1:
            block = np.zeros((step.roots.size, step.leaves.size))
            block[step.ri, step.ci] = w
        else:
            block = np.zeros((w.shape[1], step.roots.size, step.leaves.size))
            block[:, step.ri, step.ci] = w.T
        return block

    def forward(self, part: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Tangents of the targets for ``seeds`` at the sources: ``(sources, K)`` or
        ``(sources, B, K)`` in, ``(targets, ...)`` out."""
        t = np.zeros((self.count + 1,) + seeds.shape[1:])
        t[self.source_nodes] = seeds
        t[self.count] = 0.0
        w = self.weights(part)
        with np.errstate(all="ignore"):
            for s in self.steps:
                ws = w[s.lo: s.hi]
                if s.dense:
                    block = self._block(s, ws)
                    if ws.ndim == 1:
                        t[s.roots] = _product(block, t[s.leaves])
                    else:
                        t[s.roots] = _product(block, t[s.leaves].transpose(1, 0, 2)
                                              ).transpose(1, 0, 2)
                else:
                    terms = ws[..., None] * t[s.edge_leaf]
                    t[s.roots] = np.add.reduceat(terms, s.root_starts, axis=0)
        return t[self.target_nodes]

    def reverse(self, part: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """Adjoints of the sources for ``cotangents`` at the targets (shapes as in
        :meth:`forward`, the other way round)."""
        a = np.zeros((self.count + 1,) + cotangents.shape[1:])
        np.add.at(a, self.target_nodes, cotangents)
        a[self.count] = 0.0
        w = self.weights(part)
        with np.errstate(all="ignore"):
            for s in reversed(self.steps):
                ws = w[s.lo: s.hi]
                if s.dense:
                    block = self._block(s, ws)
                    if ws.ndim == 1:
                        a[s.leaves] += _product(block.T, a[s.roots])
                    else:
                        a[s.leaves] += _product(block.transpose(0, 2, 1), a[s.roots].transpose(
                            1, 0, 2)).transpose(1, 0, 2)
                else:
                    terms = (ws[..., None] * a[s.roots][s.edge_root])[s.by_leaf]
                    a[s.leaf_runs] += np.add.reduceat(terms, s.leaf_starts, axis=0)
        a[self.count] = 0.0
        return a[self.source_nodes]
