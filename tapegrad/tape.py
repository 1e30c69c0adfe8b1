"""The tape: every scalar op recorded as one row of structure-of-arrays NumPy buffers.

Columns (one entry per row):

=========  =======  ==========================================================
column     dtype    meaning
=========  =======  ==========================================================
opcode     int8     index into :data:`tapegrad.ops.OPS`
args       int32×2  operand rows, ``-1`` where the operand is the immediate
const      float64  immediate constant (``x + 1.0`` records one row, no node)
value      float64  forward value
grad       float64  gradient left by the last ``backward()``
level      int32    ``1 + max(level of operands)``; leaves are level 0
low        int32    lowest row among the row itself and its non-leaf operands
=========  =======  ==========================================================

Recording appends a row in two steps that keep the hot path cheap: the value goes
straight into the value column through a ``memoryview`` (Python floats in and out, and
it is read back by the next op), the other fields go to a flat Python staging list
that is flushed into the NumPy columns every few thousand rows. Columns grow by
doubling into fresh ``np.zeros`` buffers, whose untouched pages the OS does not commit.
Nothing outside this module touches the buffers; everything else uses :class:`Tape`'s
public API or the :class:`tapegrad.Value` facade.
"""

from __future__ import annotations

import array
import bisect
import ctypes
import gc
import itertools
import math
import numbers
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _plan, _stats, _sweep, _tapefile
from .ops import LEAF, OPS, Op

__all__ = ["Tape", "current_tape", "scope", "ResetTapeError"]

_STAGE_ROWS = 4096          # rows staged in Python lists between flushes
_STAGE_WIDTH = 5            # staged fields per row: opcode, arg0, arg1, const, level
_RECLAIM_MIN_ROWS = 1 << 20  # a reclaiming tape never compacts below this size
_FIRST_CAPACITY = 1024
_EXACT = 2**53              # ints up to this size convert to float64 exactly and fast
_PLANS_KEPT = 8             # backward roots whose compiled plans a tape keeps
_COLUMNS = {"_op": np.int8, "_a0": np.int32, "_a1": np.int32, "_c": np.float64,
            "_val": np.float64, "_lv": np.int32, "_low": np.int32, "_g": np.float64}
_NUMPY_COLUMNS = tuple(_COLUMNS)
ROW_BYTES = sum(np.dtype(t).itemsize for t in _COLUMNS.values())
"""Bytes one row occupies across all columns (41)."""
_ROW_COLUMNS = ("_a0", "_a1", "_low")   # hold row numbers: renumbered by compaction

_names = itertools.count(1)


class ResetTapeError(RuntimeError):
    """A Value was used after its tape was reset: its rows no longer exist."""


class _Rows:
    """The buffers of one tape. ``Value`` facades point here, not at the :class:`Tape`.

    ``Tape.reset()`` retires a ``_Rows`` (its buffers are freed and its class becomes
    :class:`_RetiredRows`) and starts a new one, so old Values raise
    :class:`ResetTapeError` instead of reading freed rows. The class swap keeps
    ``_Rows`` free of ``__getattr__`` hooks, which would slow down every attribute
    load on the recording hot path.
    """

    __slots__ = (
        "name", "_n", "_limit", "_room", "_v", "_val", "_s", "_flushed", "_cap",
        "_op", "_a0", "_a1", "_c", "_lv", "_low", "_g",
        "_labels", "_links", "_reclaim", "_reclaim_min", "_reclaim_at", "_epoch",
        "_scope_names", "_scope_index", "_mark_rows", "_mark_ids", "_dropped", "owner",
        "_plans", "_replayed", "_link_groups", "__weakref__",
    )

    def __init__(self, name: str, reclaim: bool, reclaim_min_rows: int,
                 owner: Callable[[], Tape | None]) -> None:
        self.name = name
        self.owner = owner          # weak reference to the public Tape
        self._n = 0                 # rows recorded (flushed + staged)
        self._flushed = 0           # rows already in the NumPy columns
        self._s: list = []          # staged fields of rows _flushed.._n
        self._cap = _FIRST_CAPACITY
        for col, dtype in _COLUMNS.items():
            setattr(self, col, np.zeros(self._cap, dtype))
        self._v = memoryview(self._val)     # element access with Python floats
        self._labels: dict[int, str] = {}
        self._links: dict[Any, int] = {}   # leaf Value of another tape -> its row here
        self._reclaim = reclaim
        self._reclaim_min = reclaim_min_rows
        self._reclaim_at = reclaim_min_rows
        self._epoch = 0
        self._scope_names: list[str] = [""]     # scope id -> path; 0 is "no scope"
        self._scope_index: dict[str, int] = {"": 0}
        self._mark_rows: list[int] = [0]        # from this row on ...
        self._mark_ids: list[int] = [0]         # ... rows belong to this scope
        self._dropped = 0                       # rows freed by compaction so far
        self._plans: dict[Any, Any] = {}        # compiled plans, by (kind, epoch, ...)
        self._replayed = 0                      # rows covered by the last forward()
        self._link_groups: list | None = None   # _links grouped by home, built on demand
        self._set_limit()
        _all_rows.add(self)

    def __del__(self) -> None:
        if type(self) is _Rows:          # rows staged on a dropped tape still count
            _count_flushed(self._n - self._flushed)

    def retire(self) -> None:
        """Free the buffers; later use of this tape's old Values raises ResetTapeError."""
        _count_flushed(self._n - self._flushed)
        for slot in _Rows.__slots__:
            if slot not in ("name", "owner", "__weakref__"):
                object.__delattr__(self, slot)
        self.__class__ = _RetiredRows

    def staged(self) -> int:
        """Rows recorded but not yet flushed into the NumPy columns."""
        return self._n - self._flushed

    def check_alive(self) -> None:
        """Raise :class:`ResetTapeError` if these rows were retired (on a retired tape)."""

    # -- room for new rows -------------------------------------------------------------

    def _set_limit(self) -> None:
        """``_room``: rows that fit before the next flush/grow/reclaim. ``_limit``: the
        gate of the inlined recorders, ``_room`` normally and 0 under ``detect_anomaly``
        (every op then takes the checked path)."""
        room = min(self._flushed + _STAGE_ROWS, self._cap)
        if self._reclaim:
            room = min(room, max(self._reclaim_at, self._n + 1))
        self._room = room
        self._limit = 0 if _anomaly.depth else room

    def make_room(self, rows: int = 1) -> None:
        """Flush, reclaim or grow so that ``rows`` more rows fit before the next check."""
        if self._n + rows <= self._room:
            return
        self.flush()
        if self._reclaim and self._n + rows > self._reclaim_at:
            self.reclaim()
        if self._n + rows > self._cap:
            self._grow(self._n + rows)
        self._set_limit()
        if self._room < self._n + rows:    # a staging block smaller than the request
            self._room = self._n + rows
            if not _anomaly.depth:
                self._limit = self._room

    def _grow(self, need: int) -> None:
        cap = self._cap
        while cap < need:
            cap *= 2
        # fresh buffers instead of in-place resizes: views handed out earlier stay valid
        for col in _NUMPY_COLUMNS:
            old = getattr(self, col)
            new = np.zeros(cap, old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, col, new)
        self._v = memoryview(self._val)
        self._cap = cap

    def flush(self) -> None:
        """Move staged rows into the NumPy columns."""
        s = self._s
        if not s:
            return
        a, b = self._flushed, self._n
        for k, (col, code) in enumerate((("_op", "b"), ("_a0", "i"), ("_a1", "i"),
                                         ("_c", "d"), ("_lv", "i"))):
            block = array.array(code)
            block.fromlist(s[k::_STAGE_WIDTH])
            getattr(self, col)[a:b] = np.frombuffer(block, dtype=getattr(self, col).dtype)
        s.clear()
        self._flushed = b
        _count_flushed(b - a)
        self._set_low(a, b)

    def _set_low(self, a: int, b: int) -> None:
        """The ``low`` column of rows a..b-1 from their operands and levels."""
        low = np.arange(a, b, dtype=np.int32)
        for args in (self._a0[a:b], self._a1[a:b]):
            pos = np.flatnonzero(args >= 0)
            pos = pos[self._lv[args[pos]] > 0]
            low[pos] = np.minimum(low[pos], args[pos])
        self._low[a:b] = low

    # -- appending rows (slow path; the hot path is inlined in the op recorders) -------

    def append(self, code: int, i: int, j: int, c: float, value: float, level: int) -> int:
        if self._n >= self._room:
            self.make_room()
        r = self._n
        self._v[r] = value
        self._n = r + 1
        self._s += (code, i, j, c, level)
        return r

    def link(self, leaf: Any) -> int:
        """Row on this tape that mirrors ``leaf``, a leaf Value homed on another tape."""
        value = leaf._tape.value(leaf._i)
        row = self._links.get(leaf)
        if row is None:
            row = self.append(LEAF.code, -1, -1, 0.0, value, 0)
            self._links[leaf] = row
            self._link_groups = None
        else:
            self._v[row] = value    # mirror the leaf's current data, as micrograd reads it
        return row

    def _links_by_home(self) -> list[tuple[_Rows, np.ndarray, np.ndarray]]:
        """Links grouped by home tape: (home rows object, rows here, rows there).

        Cached until a link is added here or a home tape renumbers its rows.
        """
        cached = self._link_groups
        if cached is not None and all(home._epoch == epoch for home, epoch, *_ in cached):
            return [(home, here, there) for home, _, here, there in cached]
        groups: dict[int, tuple[_Rows, list[int], list[int]]] = {}
        for leaf, row in self._links.items():
            home = leaf._tape
            entry = groups.get(id(home))
            if entry is None:
                entry = groups[id(home)] = (home, [], [])
            entry[1].append(row)
            entry[2].append(leaf._i)
        self._link_groups = [(home, home._epoch, np.array(here, np.int64),
                              np.array(there, np.int64)) for home, here, there in groups.values()]
        return [(home, here, there) for home, _, here, there in self._link_groups]

    def refresh_links(self) -> None:
        """Copy the current data of linked leaves into their mirror rows here."""
        if self._links:
            for home, here, there in self._links_by_home():
                home.check_alive()
                self._val[here] = home._val[there]

    # -- element access ---------------------------------------------------------------

    def value(self, i: int) -> float:
        return self._v[i]

    def set_value(self, i: int, x: float) -> None:
        self._v[i] = x

    def grad(self, i: int) -> float:
        return float(self._g[i])

    def set_grad(self, i: int, g: float) -> None:
        self._g[i] = g

    def level(self, i: int) -> int:
        self.flush()
        return int(self._lv[i])

    def row(self, i: int) -> tuple[Op, int, int, float]:
        """(op, arg0, arg1, const) of row ``i``."""
        self.flush()
        return OPS[self._op[i]], int(self._a0[i]), int(self._a1[i]), float(self._c[i])

    def describe(self, row: int) -> str:
        """`` 'label' [scope]`` of a row, for error messages ("" when it has neither)."""
        text = ""
        label = self._labels.get(row)
        if label:
            text += f" {label!r}"
        if row < self._n:
            k = bisect.bisect_right(self._mark_rows, row) - 1
            scope_name = self._scope_names[self._mark_ids[k]]
            if scope_name:
                text += f" [{scope_name}]"
        return text

    # -- name scopes -------------------------------------------------------------------

    def mark_scope(self, path: str) -> None:
        """Rows recorded from now on belong to scope ``path`` (``""``: none)."""
        sid = self._scope_index.get(path)
        if sid is None:
            sid = self._scope_index[path] = len(self._scope_names)
            self._scope_names.append(path)
        if self._mark_rows[-1] == self._n:
            self._mark_ids[-1] = sid
        else:
            self._mark_rows.append(self._n)
            self._mark_ids.append(sid)

    def scope_ids(self) -> np.ndarray:
        """Scope id of every row (index into ``_scope_names``)."""
        starts = np.array(self._mark_rows + [self._n], np.int64)
        return np.repeat(np.array(self._mark_ids, np.int32), np.diff(starts))

    # -- whole-column views -----------------------------------------------------------

    def columns(self) -> _sweep.Columns:
        """Read-only NumPy views of all recorded rows."""
        self.flush()
        n = self._n
        cols = _sweep.Columns(
            op=self._op[:n], a0=self._a0[:n], a1=self._a1[:n], const=self._c[:n],
            value=self._val[:n], level=self._lv[:n],
            low=self._low[:n], grad=self._g[:n],
        )
        for arr in cols:
            arr.flags.writeable = False
        return cols

    # -- backward ---------------------------------------------------------------------

    @property
    def recorded(self) -> int:
        """Rows recorded over the tape's life (compaction does not lower it)."""
        return self._n + self._dropped

    def backward(self, root: int) -> None:
        probe = _probes[-1] if _probes else None
        timing = _sweep.Timing() if probe is not None else None
        start = time.perf_counter()
        self.refresh_links()
        cols = self.columns()
        g = self._g
        # roots that a forward() replayed use a compiled plan (built once, then reused);
        # others, rows recorded since included, sweep eagerly
        key = ("backward", self._epoch, root)
        if root < self._replayed and not _anomaly.depth:
            entry = self._plans.get(key) or self._backward_plan(cols, root)
            plan, back, inner, leaves = entry
            values = plan.new_values()
            values[: plan.rows.size] = cols.value[plan.rows]
            adj = back.run(values, timing)
            g[inner] = adj[back.rows]
            g[leaves] += adj[plan.leaves]
            rows_swept = plan.rows.size

            def adjoint(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                at = np.minimum(np.searchsorted(plan.rows, rows), plan.rows.size - 1)
                found = plan.rows[at] == rows
                return found, adj[at[found]]
        else:
            sweep = _sweep.reverse_sweep(cols, root, timing)
            lo, hi = sweep.lo, root + 1
            if _anomaly.depth:
                self._check_backward(cols, root, sweep)
            g[lo:hi][sweep.inner] = sweep.adj[lo:hi][sweep.inner]
            g[sweep.leaves] += sweep.adj[sweep.leaves]
            rows_swept = root + 1 - lo
            leaves = sweep.leaves

            def adjoint(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                found = np.isin(rows, sweep.leaves)
                return found, sweep.adj[rows[found]]
        if self._links:
            # a mirrored leaf: its home row accumulates, the mirror holds this call's share
            for home, here, there in self._links_by_home():
                found, share = adjoint(here)
                g[here[found]] = share
                np.add.at(home._g, there[found], share)
        if probe is not None:
            probe.on_backward(self.name, rows_swept, time.perf_counter() - start, timing)

    def _check_backward(self, cols: _sweep.Columns, root: int, sweep: _sweep.Sweep) -> None:
        """Raise FloatingPointError at the first row of the sweep that turned a finite
        gradient into nan or inf for one of its operands."""
        found = _sweep.backward_anomaly(cols, root, sweep)
        if found is None:
            return
        row, slot, partial, grad = found
        op = OPS[cols.op[row]]
        arg = int((cols.a0 if slot == 0 else cols.a1)[row])
        raise FloatingPointError(
            f"detect_anomaly: backward through {op.name} at row {row} of tape "
            f"{self.name!r}{self.describe(row)}: its gradient {grad!r} times its local "
            f"partial {partial!r} with respect to operand {slot} (row {arg}, value "
            f"{float(cols.value[arg])!r}) is {partial * grad!r}")

    def load_columns(self, data: dict[str, np.ndarray]) -> None:
        """Fill this empty tape with rows read by :func:`tapegrad._tapefile.read`."""
        n = data["op"].size
        if n > self._cap:
            self._grow(n)
        self._op[:n] = data["op"]
        self._a0[:n] = data["args"][:, 0]
        self._a1[:n] = data["args"][:, 1]
        self._c[:n] = data["const"]
        self._val[:n] = data["value"]
        self._g[:n] = data["grad"]
        self._lv[:n] = data["level"]
        self._n = self._flushed = n
        self._set_low(0, n)
        self._labels = data["labels"]
        self._scope_names = data["scopes"] or [""]
        self._scope_index = {name: k for k, name in enumerate(self._scope_names)}
        self._mark_rows = data["mark_rows"].astype(int).tolist()
        self._mark_ids = data["mark_ids"].astype(int).tolist()
        self._set_limit()

    def _backward_plan(self, cols: _sweep.Columns, root: int) -> tuple:
        """Compiled backward for ``root``: (plan, schedule, tape rows of its non-leaf
        rows and of its leaves), cached until the tape renumbers its rows."""
        sweep = _sweep.reverse_sweep(cols, root)      # its masks: the root's ancestors
        rows = np.union1d(np.flatnonzero(sweep.inner) + sweep.lo, sweep.leaves)
        plan = _plan.Plan.build(cols, rows, np.empty(0, np.int64))
        back = _plan.Backward(plan, int(plan.local(np.array([root]))[0]))
        entry = (plan, back, plan.rows[back.rows], plan.rows[plan.leaves])
        self._remember(("backward", self._epoch, root), entry)
        return entry

    def _remember(self, key: tuple, entry: Any) -> None:
        """Cache a plan for the current epoch; the compiled backwards of at most
        _PLANS_KEPT roots are kept, the oldest go first."""
        plans = {k: v for k, v in self._plans.items() if k[1] == self._epoch and k != key}
        roots = [k for k in plans if k[0] == "backward"]
        for old in roots[: max(0, len(roots) - _PLANS_KEPT + 1)]:
            del plans[old]
        plans[key] = entry
        self._plans = plans

    def forward(self) -> None:
        """Recompute every non-leaf row from the current leaf values, in place."""
        probe = _probes[-1] if _probes else None
        timing = _sweep.Timing() if probe is not None else None
        start = time.perf_counter()
        self.refresh_links()
        cols = self.columns()
        n = self._n
        key = ("forward", self._epoch, n)
        plan = self._plans.get(key)
        if plan is None:
            plan = _plan.Plan.build(cols, np.arange(n), np.empty(0, np.int64))
            self._plans = {k: v for k, v in self._plans.items() if k[0] != "forward"}
            self._remember(key, plan)
        values = plan.new_values()
        values[:n] = self._val[:n]
        plan.run(values, self.describe, timing, anomaly=bool(_anomaly.depth))
        self._val[plan.evaluated] = values[plan.evaluated]
        self._replayed = n
        if probe is not None and hasattr(probe, "on_replay"):
            probe.on_replay(self.name, n, time.perf_counter() - start, timing)

    # -- reclaiming rows no live Value can reach -----------------------------------------

    def reclaim(self) -> None:
        """Drop rows that no live Value can reach and renumber the rest (docs/design.md).

        Live Values are found by scanning the garbage collector's objects for facades
        of this tape; they pin their rows, and each pinned non-leaf row keeps the
        smallest closed interval of rows ending at it (:func:`_sweep.closure_start`).
        """
        self.flush()
        cls = _facade
        # (a Value still inside __init__ has no _tape yet: it has no row to pin either)
        facades = [o for o in gc.get_objects()
                   if type(o) is cls and getattr(o, "_tape", None) is self]
        n = self._n
        live = np.fromiter((f._i for f in facades), dtype=np.int64, count=len(facades))
        cols = self.columns()
        keep = _sweep.reachable(cols, live)
        kept = int(keep.sum())
        new_index = np.cumsum(keep, dtype=np.int64) - 1
        self._compact(keep, new_index, kept)
        self._dropped += n - kept
        for f, r in zip(facades, new_index[live].tolist()):
            f._i = r
        self._labels = {int(new_index[r]): s for r, s in self._labels.items() if keep[r]}
        self._links = {leaf: int(new_index[r]) for leaf, r in self._links.items() if keep[r]}
        self._link_groups = None
        kept_before = np.concatenate(([0], np.cumsum(keep)))
        starts = kept_before[np.minimum(np.array(self._mark_rows), n)]
        ids = np.array(self._mark_ids)
        last = np.append(starts[1:] != starts[:-1], True)     # later marks at a row win
        starts, ids = starts[last], ids[last]
        change = np.append(True, ids[1:] != ids[:-1])          # drop repeated scopes
        self._mark_rows, self._mark_ids = starts[change].tolist(), ids[change].tolist()
        self._epoch += 1
        self._reclaim_at = max(self._reclaim_min, 2 * kept)
        self._set_limit()

    def _compact(self, keep: np.ndarray, new_index: np.ndarray, kept: int) -> None:
        n = self._n
        for col in _NUMPY_COLUMNS:
            arr = getattr(self, col)
            a = arr[:n][keep]
            if col in _ROW_COLUMNS:
                a = np.where(a >= 0, new_index[a], -1)
            arr[:kept] = a
            arr[kept:n] = 0
        self._n = self._flushed = kept
        self._replayed = 0

    # -- size -------------------------------------------------------------------------

    def nbytes(self) -> int:
        """Bytes the recorded rows occupy in the columns (not counting spare capacity)."""
        return self._n * ROW_BYTES

    def column_nbytes(self) -> dict[str, int]:
        """Bytes per public column for the recorded rows."""
        n = self._n
        size = {c: np.dtype(t).itemsize for c, t in _COLUMNS.items()}
        return {"opcode": n * size["_op"], "args": n * (size["_a0"] + size["_a1"]),
                "const": n * size["_c"], "value": n * size["_val"], "grad": n * size["_g"],
                "level": n * size["_lv"], "low": n * size["_low"]}


class _RetiredRows(_Rows):
    """The rows of a tape after ``reset()``: every use raises :class:`ResetTapeError`."""

    __slots__ = ()

    def __getattribute__(self, attr: str) -> Any:
        name = object.__getattribute__(self, "name")
        if attr == "name":
            return name
        raise ResetTapeError(
            f"this Value belongs to tape {name!r}, which was reset: its rows were freed. "
            "Record the computation again."
        )


# ---------------------------------------------------------------------------------------
# the public Tape
# ---------------------------------------------------------------------------------------

class Tape:
    """A recording of scalar ops, one row each, in NumPy structure-of-arrays buffers.

    ``with Tape() as t:`` makes ``t`` the current tape of this thread; ops on Values
    recorded there land on ``t``. Without any ``with`` block, each thread records on
    its own default tape, which reclaims rows no live Value can reach (micrograd-style
    loops build a new graph every step and never say so).

    Args:
        name: shown in errors, dumps and pictures. Defaults to ``"tape-<n>"``.
        reclaim: compact the tape automatically (see :meth:`compact`) whenever it grows
            past ``max(reclaim_min_rows, 2 × rows kept by the last compaction)``. The
            default tape does; explicit tapes do not, so their rows stay where they
            are until :meth:`reset` or :meth:`compact`.
        reclaim_min_rows: the smallest size at which automatic compaction runs.
    """

    def __init__(self, name: str | None = None, *, reclaim: bool = False,
                 reclaim_min_rows: int = _RECLAIM_MIN_ROWS) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Tape name must be a str, got {type(name).__name__}")
        if (not isinstance(reclaim_min_rows, int) or isinstance(reclaim_min_rows, bool)
                or reclaim_min_rows < 1):
            raise ValueError(f"reclaim_min_rows must be a positive int, got {reclaim_min_rows!r}")
        self.name = name if name is not None else f"tape-{next(_names)}"
        self.reclaim = bool(reclaim)
        self.reclaim_min_rows = reclaim_min_rows
        self._rows = _Rows(self.name, self.reclaim, reclaim_min_rows, weakref.ref(self))

    @classmethod
    def _of(cls, rows: _Rows) -> Tape:
        """The public Tape of ``rows`` (a new handle if the original was dropped)."""
        tape = rows.owner()
        if tape is None:
            tape = cls.__new__(cls)
            tape.name, tape.reclaim = rows.name, rows._reclaim
            tape.reclaim_min_rows, tape._rows = rows._reclaim_min, rows
            rows.owner = weakref.ref(tape)
        return tape

    # -- context ----------------------------------------------------------------------

    def __enter__(self) -> Tape:
        _stack().append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _stack()
        if not stack or stack[-1] is not self:
            raise RuntimeError(f"tape {self.name!r} exited out of order")
        stack.pop()

    # -- size and lifetime --------------------------------------------------------------

    def __len__(self) -> int:
        return self._rows._n

    def __repr__(self) -> str:
        return f"Tape(name={self.name!r}, rows={len(self)})"

    def reset(self) -> None:
        """Free every row. Values recorded before raise :class:`ResetTapeError` when used.

        The buffers go back to the operating system: after freeing large ones, the C
        allocator is asked to release its free memory (glibc's ``malloc_trim``), which
        it would otherwise keep for later allocations.
        """
        large = self._rows._cap * ROW_BYTES >= _TRIM_BYTES
        self._rows.retire()
        self._rows = _Rows(self.name, self.reclaim, self.reclaim_min_rows, weakref.ref(self))
        if large:
            _release_free_memory()

    def forward(self) -> None:
        """Replay: recompute every non-leaf row from the current leaf values, in place.

        Leaf values are whatever ``Value.data`` holds now (an optimizer step, new
        inputs), including leaves of other tapes linked into this one. Afterwards
        ``.data`` of every Value and ``backward()`` behave as if the recorded code had
        run again (bit for bit for + - * / relu abs neg sqrt; NumPy's tanh, exp, log,
        sigmoid, sin, cos and pow may differ from Python's math in the last bit or
        two). Raises :class:`tapegrad.GuardError` if a recorded comparison would
        come out differently: the recording no longer describes the program.

        The first call compiles a plan (levels, folded sum and product chains); later
        calls reuse it while the tape's rows stay the same.
        """
        self._rows.forward()

    def value(self, row: int) -> Any:
        """A Value for ``row`` of this tape (e.g. a row seen in a dump, or after load)."""
        rows = self._rows
        if not isinstance(row, (int, np.integer)) or isinstance(row, bool):
            raise TypeError(f"row must be an int, got {type(row).__name__}")
        if not 0 <= row < rows._n:
            raise IndexError(f"row {row} is not on tape {self.name!r} ({rows._n} rows)")
        return _new_value(rows, int(row), rows.level(int(row)))

    # -- saving and loading ---------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the tape to ``path`` as a ``.npz`` (plain arrays, no pickle).

        Rows, values, gradients, labels and scopes round-trip bit for bit through
        :meth:`load`. Leaves linked from other tapes are saved as plain leaves.
        """
        rows = self._rows
        _tapefile.write(path, self.name, rows.columns(), rows._labels, rows._scope_names,
                        rows._mark_rows, rows._mark_ids)

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> Tape:
        """Read a tape written by :meth:`save`; ``tape.value(row)`` gives its Values.

        A truncated, corrupted, foreign or wrong-version file raises ``ValueError``
        (nothing in it is executed: pickles are refused).
        """
        data = _tapefile.read(path)
        tape = cls(name if name is not None else str(data["name"]))
        tape._rows.load_columns(data)
        return tape

    def compact(self) -> int:
        """Drop the rows no live Value can reach, renumber the rest; returns rows freed.

        Live Values keep working (their rows move); a row stays when a live Value
        depends on it. Row numbers seen before (dumps, ``values[i]``) change.
        """
        before = len(self)
        self._rows.reclaim()
        return before - len(self)

    @property
    def nbytes(self) -> int:
        """Bytes the recorded rows occupy (rows × 41); spare capacity is not counted."""
        return self._rows.nbytes()

    # -- read-only views of the rows -------------------------------------------------------

    @property
    def opcodes(self) -> np.ndarray:
        """Opcode of every row (``int8``; names in :data:`tapegrad.ops.OPS`)."""
        return self._rows.columns().op

    @property
    def args(self) -> np.ndarray:
        """Operand rows, shape ``(len, 2)``; ``-1`` marks the immediate or an unused slot."""
        cols = self._rows.columns()
        out = np.stack([cols.a0, cols.a1], axis=1)
        out.flags.writeable = False
        return out

    @property
    def consts(self) -> np.ndarray:
        """Immediate constant of every row (``0.0`` where unused)."""
        return self._rows.columns().const

    @property
    def values(self) -> np.ndarray:
        """Forward value of every row."""
        return self._rows.columns().value

    @property
    def grads(self) -> np.ndarray:
        """Gradient of every row after the last ``backward()``."""
        return self._rows.columns().grad

    @property
    def levels(self) -> np.ndarray:
        """Topological level of every row (leaves 0)."""
        return self._rows.columns().level

    def label(self, row: int) -> str:
        """The label given to ``row`` (``""`` when none)."""
        return self._rows._labels.get(row, "")

    @property
    def labels(self) -> dict[int, str]:
        """Labels by row (a copy)."""
        return dict(self._rows._labels)

    @property
    def scope_ids(self) -> np.ndarray:
        """Name-scope id of every row; ``scope_names[id]`` is its path, ``""`` for none."""
        ids = self._rows.scope_ids()
        ids.flags.writeable = False
        return ids

    @property
    def scope_names(self) -> tuple[str, ...]:
        """Scope paths by id (``"layer1/neuron3"``); id 0 is ``""``, outside any scope."""
        return tuple(self._rows._scope_names)

    def stats(self) -> _stats.TapeStats:
        """Size, op mix, level widths, fan-out, longest chain and memory of the tape.

        Vectorized: seconds on a 10^7-row tape. ``.to_dict()`` is JSON-serialisable.
        """
        rows = self._rows
        return _stats.stats(rows.columns(), rows.column_nbytes())

    def dump(self, max_lines: int = 40) -> str:
        """A readable listing, one row per line, head and tail beyond ``max_lines``::

            %12 = mul %3 %7            # data 0.5 grad -1.25  [layer1/neuron3]
        """
        if not isinstance(max_lines, int) or isinstance(max_lines, bool) or max_lines < 2:
            raise ValueError(f"max_lines must be an int >= 2, got {max_lines!r}")
        rows = self._rows
        return _stats.dump(rows.columns(), rows._labels, rows.scope_ids(),
                           rows._scope_names, max_lines)

    def scope_of(self, row: int) -> str:
        """The scope path ``row`` was recorded in (``""`` when none)."""
        if not isinstance(row, (int, np.integer)) or isinstance(row, bool):
            raise TypeError(f"row must be an int, got {type(row).__name__}")
        rows = self._rows
        if not 0 <= row < rows._n:
            raise IndexError(f"row {row} is not on tape {self.name!r} ({rows._n} rows)")
        k = bisect.bisect_right(rows._mark_rows, row) - 1
        return rows._scope_names[rows._mark_ids[k]]


# ---------------------------------------------------------------------------------------
# the current tape of each thread
# ---------------------------------------------------------------------------------------

_TRIM_BYTES = 1 << 22       # reset() of buffers this large asks the allocator to trim


def _release_free_memory() -> None:
    """Ask glibc to return free heap memory to the OS (no-op elsewhere)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


class _AnomalyState:
    depth = 0       # open detect_anomaly() blocks (all threads)


_anomaly = _AnomalyState()


class detect_anomaly:
    """``with tapegrad.detect_anomaly():`` makes the first op that produces nan or inf
    raise ``FloatingPointError`` naming the op, its row, label and scope and its
    operands' values: while recording, in ``Tape.forward()``/``Function`` replays, and
    in ``backward()`` (the row whose local partial turns a finite gradient into nan or
    inf). Recording takes the checked path for every op meanwhile (slower); it applies
    to all tapes and threads while any block is open.
    """

    def __enter__(self) -> detect_anomaly:
        _anomaly.depth += 1
        for rows in list(_all_rows):
            if type(rows) is _Rows:
                rows._limit = 0
        return self

    def __exit__(self, *exc: object) -> None:
        _anomaly.depth -= 1
        if not _anomaly.depth:
            for rows in list(_all_rows):
                if type(rows) is _Rows:
                    rows._set_limit()


# Profilers listening to backward passes (tapegrad.profile registers itself here). A
# probe has ``on_backward(tape_name, rows, seconds, timing)``; with none registered the
# sweep does not time anything.
_probes: list[Any] = []

# Every tape's rows, so a profiler can count rows recorded anywhere.
_all_rows: weakref.WeakSet[_Rows] = weakref.WeakSet()


_flushed_total = 0              # rows ever flushed into any tape's columns (this process)
_total_lock = threading.Lock()


def rows_recorded() -> int:
    """Rows recorded so far in this process, on every tape and thread.

    Monotonic: resetting, compacting or dropping a tape does not lower it; rows read
    by ``Tape.load`` are not recorded and do not count.
    """
    staged = sum(rows.staged() for rows in list(_all_rows) if type(rows) is _Rows)
    return _flushed_total + staged


def _count_flushed(rows: int) -> None:
    global _flushed_total
    with _total_lock:
        _flushed_total += rows


def add_probe(probe: Any) -> None:
    """Register a profiler probe: it is told of every backward and replay from now on.

    A probe has ``on_backward(tape_name, rows, seconds, timing)`` and optionally
    ``on_replay(tape_name, rows, seconds, timing)``; ``timing`` is a
    :class:`tapegrad._sweep.Timing`. Only the innermost (last added) probe is called.
    """
    _probes.append(probe)


def remove_probe(probe: Any) -> None:
    """Unregister ``probe`` (its latest registration); a probe not registered is ignored."""
    for k in range(len(_probes) - 1, -1, -1):
        if _probes[k] is probe:
            del _probes[k]
            return


def probes() -> tuple[Any, ...]:
    """The registered probes, oldest first."""
    return tuple(_probes)


def entered_tapes() -> list[Tape]:
    """This thread's ``with Tape()`` stack, outermost first (the list itself: popping
    entries makes those tapes stop being current)."""
    return _state.stack


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.stack: list[Tape] = []
        self.scope = ""
        thread = threading.current_thread()
        name = "default" if thread is threading.main_thread() else f"default[{thread.name}]"
        self.default = Tape(name, reclaim=True)


_state = _ThreadState()


def _stack() -> list[Tape]:
    return _state.stack


def current_tape() -> Tape:
    """The tape ops record on in this thread: the innermost ``with Tape()`` or the default."""
    stack = _state.stack
    return stack[-1] if stack else _state.default


class scope:
    """Name the rows recorded inside, on the current tape: ``with scope("layer1"): ...``.

    Scopes nest into paths (``"layer1/neuron3"``); pictures draw them as clusters and
    dumps show them after each row. ``tapegrad.nn`` modules open one per layer and
    neuron. Rows recorded on another tape while a scope is open are not marked.
    A scope object may be reused and nested in itself, but not shared between threads.
    """

    __slots__ = ("name", "_paths", "_saved")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"scope name must be a non-empty str, got {name!r}")
        self.name = name
        self._paths: dict[str, str] = {}       # outer path -> this scope's path
        self._saved: list[tuple[str, _Rows]] = []

    def __enter__(self) -> scope:
        state = _state
        outer = state.scope
        path = self._paths.get(outer)
        if path is None:
            path = self._paths[outer] = f"{outer}/{self.name}" if outer else self.name
        state.scope = path
        stack = state.stack
        rows = (stack[-1] if stack else state.default)._rows
        self._saved.append((outer, rows))
        rows.mark_scope(path)
        return self

    def __exit__(self, *exc: object) -> None:
        outer, rows = self._saved.pop()
        _state.scope = outer
        rows.mark_scope(outer)


def _current_rows() -> _Rows:
    stack = _state.stack
    return (stack[-1] if stack else _state.default)._rows


# ---------------------------------------------------------------------------------------
# recording: the op methods of the Value facade
# ---------------------------------------------------------------------------------------

_facade: type = object   # set to tapegrad.engine.Value by register_facade()


def register_facade(cls: type) -> None:
    """Tell the recorders which class to build results with (``tapegrad.Value``)."""
    global _facade
    _facade = cls


def _new_value(t: _Rows, r: int, level: int) -> Any:
    v = object.__new__(_facade)
    v._tape = t
    v._i = r
    v._l = level
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


def _target(values: list) -> _Rows:
    """The tape an op on ``values`` records on: that of its non-leaf operands, else the current."""
    target = None
    for v in values:
        t = v._tape
        t.check_alive()
        if v._l:
            if target is not None and target is not t:
                raise ValueError(
                    f"cannot combine Values recorded on different tapes: {target.name!r} and "
                    f"{t.name!r}. Non-leaf Values live on the tape that recorded them; "
                    "record the whole computation on one tape (leaf Values may be shared)."
                )
            target = t
    return target if target is not None else _current_rows()


def _record_general(op: Op, a: Any, b: Any = None, reflected: bool = False,
                    mirrored: bool = False) -> Any:
    """Every case the inlined fast paths leave out: other number types, leaves used on
    another tape or off the current tape, a full staging block, and bad operands.

    ``reflected``: the number is the left operand (``2 - a``); ``mirrored``: the user
    wrote ``b <op> a`` but the op is commutative and records ``a <op> b`` (errors still
    name the operands in the order written)."""
    const = 0.0
    if op.arity == 1:
        values = [a]
    elif isinstance(b, _facade):
        values = [a, b]
    else:
        try:
            const = as_number(b, "the other operand")
        except (TypeError, ValueError) as err:
            raise _operand_error(op, a, b, reflected or mirrored, err) from None
        values = [a]
    t = _target(values)
    t.make_room(len(values) + 1)
    rows = [v._i if v._tape is t else t.link(v) for v in values]
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
    if _anomaly.depth and not math.isfinite(out):
        scope_name = _state.scope
        where = f" [{scope_name}]" if scope_name else ""
        operands = f"x = {x!r}" + (f", y = {y!r}" if op.arity == 2 else "")
        raise FloatingPointError(
            f"detect_anomaly: {op.name} produced {out} while recording row {t._n} of tape "
            f"{t.name!r}{where}; operands {operands}")
    r = t.append(op.code, i, j, const, out, level)
    return _new_value(t, r, level)


# The three recorders below build the facade's operator methods. They are the hot path
# of recording (one call per scalar op), so they are written out flat: one tape, the
# operands' rows and levels read once, the value into the array, the other fields onto
# the staging list. Anything unusual goes to _record_general.

def binary(op: Op, mirrored: bool = False) -> Callable[[Any, Any], Any]:
    """The facade method ``a <op> b`` (``b`` a Value, or a number kept as the immediate).

    ``mirrored``: the method serves ``b <op> a`` for a commutative op (``__radd__``).
    """
    code = op.code
    scalar = op.scalar
    evaluate = op.evaluate
    new = object.__new__

    def method(a, b):
        t = a._tape
        if type(b) is _facade:
            la = a._l
            lb = b._l
            r = t._n
            if b._tape is t and r < t._limit and (la or lb or t is _current_rows()):
                vals = t._v
                i = a._i
                j = b._i
                x = vals[i]
                y = vals[j]
                try:
                    out = scalar(x, y)
                except (ArithmeticError, ValueError):
                    out = evaluate(x, y)
                vals[r] = out
                t._n = r + 1
                level = (la if la > lb else lb) + 1
                s = t._s
                s += (code, i, j, 0.0, level)
                v = new(_facade)
                v._tape = t
                v._i = r
                v._l = level
                return v
        elif type(b) is float or (type(b) is int and -_EXACT <= b <= _EXACT):
            la = a._l
            r = t._n
            if r < t._limit and (la or t is _current_rows()):
                vals = t._v
                i = a._i
                x = vals[i]
                y = float(b)
                try:
                    out = scalar(x, y)
                except (ArithmeticError, ValueError):
                    out = evaluate(x, y)
                vals[r] = out
                t._n = r + 1
                level = la + 1
                s = t._s
                s += (code, i, -1, y, level)
                v = new(_facade)
                v._tape = t
                v._i = r
                v._l = level
                return v
        return _record_general(op, a, b, False, mirrored)

    method.__name__ = f"__r{op.name}__" if mirrored else f"__{op.name}__"
    method.__qualname__ = f"Value.{method.__name__}"
    method.__doc__ = (f"Record ``other {op.symbol} self`` as one row ({op.name}, commutative)."
                      if mirrored else f"Record ``self {op.symbol} other`` as one row ({op.name}).")
    return method


def reflected(op: Op) -> Callable[[Any, Any], Any]:
    """The facade method for ``number <op> a`` (the number becomes the immediate)."""
    code = op.code
    scalar = op.scalar
    evaluate = op.evaluate
    new = object.__new__

    def method(a, b):
        t = a._tape
        if type(b) is float or (type(b) is int and -_EXACT <= b <= _EXACT):
            la = a._l
            r = t._n
            if r < t._limit and (la or t is _current_rows()):
                vals = t._v
                j = a._i
                x = float(b)
                y = vals[j]
                try:
                    out = scalar(x, y)
                except (ArithmeticError, ValueError):
                    out = evaluate(x, y)
                vals[r] = out
                t._n = r + 1
                level = la + 1
                s = t._s
                s += (code, -1, j, x, level)
                v = new(_facade)
                v._tape = t
                v._i = r
                v._l = level
                return v
        return _record_general(op, a, b, True)

    method.__name__ = f"__r{op.name}__"
    method.__qualname__ = f"Value.{method.__name__}"
    method.__doc__ = f"Record ``other {op.symbol} self`` as one row ({op.name})."
    return method


def unary(op: Op) -> Callable[[Any], Any]:
    """The facade method ``a.<op>()``."""
    code = op.code
    scalar = op.scalar
    evaluate = op.evaluate
    new = object.__new__

    def method(a):
        t = a._tape
        la = a._l
        r = t._n
        if r < t._limit and (la or t is _current_rows()):
            vals = t._v
            i = a._i
            x = vals[i]
            try:
                out = scalar(x, 0.0)
            except (ArithmeticError, ValueError):
                out = evaluate(x, 0.0)
            vals[r] = out
            t._n = r + 1
            level = la + 1
            s = t._s
            s += (code, i, -1, 0.0, level)
            v = new(_facade)
            v._tape = t
            v._i = r
            v._l = level
            return v
        return _record_general(op, a)

    method.__name__ = op.name
    method.__qualname__ = f"Value.{op.name}"
    method.__doc__ = f"Record ``{op.name}(self)`` as one row."
    return method


def compare(op: Op) -> Callable[[Any, Any], bool]:
    """The facade method ``a < b`` (etc.): records the outcome as a guard row, returns a bool."""
    record = binary(op)

    def method(a, b):
        out = record(a, b)
        return out._tape.value(out._i) != 0.0

    method.__name__ = f"__{op.name}__"
    method.__qualname__ = f"Value.{method.__name__}"
    method.__doc__ = (f"``self {op.symbol} other`` as a bool, recorded as a guard that a "
                      "replay checks.")
    return method


def record_leaf(x: float, label: str) -> tuple[_Rows, int]:
    """Append a leaf row with value ``x`` on the current tape; (rows, row index)."""
    t = _current_rows()
    r = t.append(LEAF.code, -1, -1, 0.0, x, 0)
    if label:
        t._labels[r] = label
    return t, r
