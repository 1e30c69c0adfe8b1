"""The rows of one tape: structure-of-arrays NumPy columns, staging, blocks and liveness.

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
straight into the value column through a ``memoryview`` (Python floats in and out),
the other fields go to a flat Python staging list that is flushed into the NumPy
columns every few thousand rows. Columns grow by doubling into fresh buffers.

**Blocks and liveness** (``docs/design.md#memory``). Rows are grouped in blocks of
consecutive rows. A ``Value`` holds its :class:`Block` and its offset in it, never a
bare row number, so rows can move without anyone being told. The rows object keeps
every block in a table; a block that anything else refers to (a ``Value``, however
it is held: subclass, frozen object, object array, closure, C container) is *live*.
:meth:`Rows.compact` keeps the live blocks whole, every row some live row depends on,
and each guard whose operands stay; it drops the rest, slides the kept rows down and
moves each block's ``base``. Python's reference counting is the only bookkeeping: no
scan of the garbage collector, nothing to register or unregister per Value.
"""

from __future__ import annotations

import bisect
import itertools
import struct
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from . import _context, _graph
from .ops import CUSTOM, GUARDS, LEAF, OPS, Op

_STAGE_ROWS = 4096          # rows staged in Python lists between flushes
STAGE_WIDTH = 5             # staged fields per row: opcode, arg0, arg1, const, level
BLOCK_ROWS = 256            # rows per block: a live Value keeps at most this many others
_FIRST_CAPACITY = 1024
_COLUMNS = {"_op": np.int8, "_a0": np.int32, "_a1": np.int32, "_c": np.float64,
            "_val": np.float64, "_lv": np.int32, "_low": np.int32, "_g": np.float64}
ROW_BYTES = sum(np.dtype(t).itemsize for t in _COLUMNS.values())
"""Bytes one row occupies across all columns (41)."""
_STAGED = (("_op", "b"), ("_a0", "i"), ("_a1", "i"), ("_c", "d"), ("_lv", "i"))
"""The staged fields' columns, with the ``struct`` codes that pack them (standard sizes)."""
_ROW_COLUMNS = ("_a0", "_a1", "_low")   # hold row numbers: renumbered by compaction
_GUARD_CODES = np.array(sorted(GUARDS), np.int8)

_names = itertools.count(1)


class ResetTapeError(RuntimeError):
    """A Value was used after its tape was reset: its rows no longer exist."""


class Columns(NamedTuple):
    """Read-only views of a tape's rows (all of the same length)."""

    op: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    const: np.ndarray
    value: np.ndarray
    level: np.ndarray
    low: np.ndarray
    grad: np.ndarray


class Block:
    """Consecutive rows of one tape; what a Value refers to.

    A Value keeps the row number its row had when the block was made (``_o``); the
    block's ``shift`` counts how far compactions have moved the block down since, so
    the row is ``_o - shift``. The block rows are appended to has shift 0, so a new
    Value's number is just its row."""

    __slots__ = ("rows", "shift", "facades")

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.shift = 0
        self.facades: Any = None    # weak cache of the Values ``_prev`` handed out

    def __repr__(self) -> str:
        return f"<block of {self.rows.name!r}, moved down {self.shift} rows>"


class Rows:
    """The buffers of one tape. ``Value`` facades point at its blocks, not at the Tape.

    ``Tape.reset()`` retires a ``Rows`` (its buffers are freed and its class becomes
    :class:`RetiredRows`) and starts a new one, so old Values raise
    :class:`ResetTapeError` instead of reading freed rows. The class swap keeps
    ``Rows`` free of ``__getattr__`` hooks, which would slow down every attribute load
    on the recording hot path.
    """

    __slots__ = (
        "name", "owner", "count", "limit", "_room", "vals", "grads", "stage", "_flushed", "_cap",
        "_op", "_a0", "_a1", "_c", "_val", "_lv", "_low", "_g",
        "_labels", "_custom", "_links", "_link_rows", "_reclaim", "_reclaim_min", "_reclaim_at",
        "_epoch", "_scope_names", "_scope_index", "_mark_rows", "_mark_ids", "_dropped",
        "_plans", "_replayed", "_blocks", "_bases", "cur", "cur_base", "cur_tid", "_threads",
        "_views", "_reserved", "big_levels",
        "__weakref__",
    )

    def __init__(self, name: str, reclaim: bool, reclaim_min_rows: int,
                 owner: Any) -> None:
        self.name = name
        self.owner = owner          # weak reference to the public Tape
        self.count = 0                 # rows recorded (flushed + staged)
        self._flushed = 0           # rows already in the NumPy columns
        self._reserved = 0          # rows up to this one may be written by write_rows
        self.big_levels: set[int] = set()   # levels of roots too big for the row walk
        self.stage: list = []       # staged fields of rows _flushed..count
        self._cap = _FIRST_CAPACITY
        for col, dtype in _COLUMNS.items():
            setattr(self, col, np.zeros(self._cap, dtype))
        self.vals = memoryview(self._val)     # element access with Python floats
        self.grads = memoryview(self._g)      # ... for the gradients too
        self._views: tuple | None = None        # memoryviews of the other columns
        self._labels: dict[int, str] = {}
        self._custom: dict[int, list] = {}      # custom rows: [op symbol, _backward closure]
        self._links: dict[Any, int] = {}    # leaf Value of another tape -> its row here
        self._link_rows: dict[int, Any] = {}  # ... and back
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
        self.cur = Block(self)                  # the block rows are appended to
        self.cur_base = 0                            # ... and its base
        self._blocks: list[Block] = [self.cur]
        self._bases: list[int] = [0]
        self._threads: dict[int, int] = {}      # thread ident -> times current there
        self.cur_tid = 0                       # the one thread it is current in, else 0/-1
        self.set_limit()
        _context.all_rows.add(self)

    def __del__(self) -> None:
        if type(self) is Rows:          # rows staged on a dropped tape still count
            _context.count_flushed(self.count - self._flushed)

    def retire(self) -> None:
        """Free the buffers; later use of this tape's old Values raises ResetTapeError."""
        _context.count_flushed(self.count - self._flushed)
        _context.all_rows.discard(self)
        if _context.leaf_rows is self:
            _context.set_leaf_rows(None)
        for slot in Rows.__slots__:
            if slot not in ("name", "owner", "__weakref__"):
                object.__delattr__(self, slot)
        self.__class__ = RetiredRows

    def check_alive(self) -> None:
        """Raise :class:`ResetTapeError` if these rows were retired (on a retired tape)."""

    def staged(self) -> int:
        """Rows recorded but not yet flushed into the NumPy columns."""
        return self.count - self._flushed

    @property
    def size(self) -> int:
        """Rows on the tape now."""
        return self.count

    @property
    def epoch(self) -> int:
        """Changes whenever rows move (compaction): cached row numbers are stale then."""
        return self._epoch

    @property
    def recorded(self) -> int:
        """Rows recorded over the tape's life (compaction does not lower it)."""
        return self.count + self._dropped

    @property
    def reclaims(self) -> bool:
        """Whether the tape compacts itself when it grows (the default tapes do)."""
        return self._reclaim

    @property
    def reclaim_min_rows(self) -> int:
        return self._reclaim_min

    @property
    def replayed(self) -> int:
        """Rows the last ``forward()`` covered (0 when rows moved since)."""
        return self._replayed

    # -- which threads record here -----------------------------------------------------

    def enter_thread(self) -> None:
        """This tape becomes the current tape of the calling thread."""
        tid = _context.threading.get_ident()
        self._threads[tid] = self._threads.get(tid, 0) + 1
        self._set_tid()

    def leave_thread(self) -> None:
        """This tape stops being the calling thread's current tape (once)."""
        tid = _context.threading.get_ident()
        left = self._threads.get(tid, 0) - 1
        if left > 0:
            self._threads[tid] = left
        else:
            self._threads.pop(tid, None)
        self._set_tid()

    def forget_thread(self, tid: int) -> None:
        """Thread ``tid`` ended: these rows are current there no more."""
        if self._threads.pop(tid, None) is not None:
            self._set_tid()

    def _set_tid(self) -> None:
        # the inlined recorders test ``_cur_tid == get_ident()`` before recording an op
        # on leaves only; 0 (nowhere) and -1 (several threads) send them the slow way
        keys = list(self._threads)
        self.cur_tid = keys[0] if len(keys) == 1 else (-1 if keys else 0)
        if self.cur_tid > 0:
            _context.set_leaf_rows(self)
        elif _context.leaf_rows is self:
            _context.set_leaf_rows(None)

    def threads_from(self, old: Rows) -> None:
        """Take over where ``old`` (the rows this tape had before a reset) was current."""
        self._threads = dict(old._threads)
        self._set_tid()

    # -- room for new rows -------------------------------------------------------------

    def set_limit(self) -> None:
        """``_room``: rows that fit before the next flush/grow/reclaim/new block.
        ``_limit``: the gate of the inlined recorders, ``_room`` normally and 0 under
        ``detect_anomaly`` (every op then takes the checked path)."""
        room = min(self._flushed + _STAGE_ROWS, self._cap, self.cur_base + BLOCK_ROWS)
        if self._reclaim:
            room = min(room, max(self._reclaim_at, self.count + 1))
        self._room = room
        self.limit = 0 if _context.anomaly.depth else room

    def make_room(self, rows: int = 1) -> None:
        """Flush, reclaim, grow or start a block so that ``rows`` more rows fit."""
        if self.count + rows <= self._room:
            return
        if self.count + rows > self._flushed + _STAGE_ROWS:
            self.flush()
        if self._reclaim and self.count + rows > self._reclaim_at:
            self.compact()
        if self.count + rows > self._cap:
            self._grow(self.count + rows)
        if self.count + rows > self.cur_base + BLOCK_ROWS and self.count > self.cur_base:
            self._new_block()
        self.set_limit()
        if self._room < self.count + rows:    # a request larger than a block
            self._room = self.count + rows
            if not _context.anomaly.depth:
                self.limit = self._room

    def _new_block(self) -> None:
        self.cur = Block(self)
        self.cur_base = self.count
        self._blocks.append(self.cur)
        self._bases.append(self.count)

    def _grow(self, need: int) -> None:
        cap = self._cap
        while cap < need:
            cap *= 2
        # fresh buffers instead of in-place resizes: views handed out earlier stay valid
        for col in _COLUMNS:
            old = getattr(self, col)
            new = np.zeros(cap, old.dtype)
            new[: self.count] = old[: self.count]
            setattr(self, col, new)
        self.vals = memoryview(self._val)
        self.grads = memoryview(self._g)
        self._views = None
        self._cap = cap

    def flush(self) -> None:
        """Move staged rows into the NumPy columns."""
        s = self.stage
        if not s:
            return
        a, b = self._flushed, self.count
        for k, (col, code) in enumerate(_STAGED):
            packed = struct.pack(f"={b - a}{code}", *s[k::STAGE_WIDTH])
            getattr(self, col)[a:b] = np.frombuffer(packed, _COLUMNS[col])
        s.clear()
        self._flushed = b
        _context.count_flushed(b - a)
        self._set_low(a, b)

    def _set_low(self, a: int, b: int) -> None:
        """The ``low`` column of rows a..b-1 from their operands and levels."""
        low = self._low[a:b]
        low[:] = np.arange(a, b, dtype=np.int32)
        lv = self._lv
        for args in (self._a0[a:b], self._a1[a:b]):
            nonleaf = lv[args] > 0          # an immediate's -1 reads some level: masked
            nonleaf &= args >= 0
            np.minimum(low, args, out=low, where=nonleaf)

    # -- appending rows (slow path; the hot path is inlined in tapegrad._record) -------

    def append(self, code: int, i: int, j: int, c: float, value: float, level: int) -> int:
        """Append one row; its row number."""
        if self.count >= self._room:
            self.make_room()
        r = self.count
        self.vals[r] = value
        self.count = r + 1
        self.stage.extend((code, i, j, c, level))
        return r

    def reserve(self, n: int) -> int:
        """Make room for ``n`` rows written at once by :meth:`write_rows`; the first row.

        Staged rows are flushed first, so the new rows go straight into the columns.
        Room may come from a compaction, which moves rows: read operand rows from their
        Values after this call, not before."""
        self.flush()
        self.make_room(n)         # stages nothing: the columns stay complete
        self._reserved = self.count + n
        return self.count

    def write_rows(self, op: np.ndarray, a0: np.ndarray, a1: np.ndarray, c: np.ndarray,
                   value: np.ndarray, level: np.ndarray, low: np.ndarray | None = None) -> int:
        """Append rows given as column arrays (after :meth:`reserve`, in one or more
        calls); the first row. ``low``: their ``low`` column if the caller knows it (see
        :meth:`_set_low`)."""
        r = self.count
        b = r + len(op)
        if b > max(self._room, self._reserved) or self._flushed != r:
            raise RuntimeError("write_rows needs reserve() for these rows first")
        for col, data in (("_op", op), ("_a0", a0), ("_a1", a1), ("_c", c),
                          ("_val", value), ("_lv", level)):
            getattr(self, col)[r:b] = data
        self.count = self._flushed = b
        _context.count_flushed(b - r)
        if low is None:
            self._set_low(r, b)
        else:
            self._low[r:b] = low
        self.set_limit()
        return r

    def block_of(self, row: int) -> Block:
        """The block holding ``row``."""
        return self._blocks[bisect.bisect_right(self._bases, row) - 1]

    def link(self, leaf: Any) -> int:
        """Row on this tape that mirrors ``leaf``, a leaf Value homed on another tape;
        its data is copied over now and before each backward."""
        value = leaf.data
        row = self._links.get(leaf)
        if row is None:
            row = self.append(LEAF.code, -1, -1, 0.0, value, 0)
            self._links[leaf] = row
            self._link_rows[row] = leaf
        else:
            self.vals[row] = value    # mirror the leaf's current data, as micrograd reads it
        return row

    def linked_row(self, leaf: Any) -> int | None:
        """The row mirroring ``leaf`` (a Value of another tape) here, if it was used here."""
        return self._links.get(leaf)

    def has_links(self) -> bool:
        return bool(self._links)

    def links(self) -> list[tuple[int, Any]]:
        """(row here, leaf Value of another tape) of every mirrored leaf."""
        return list(self._link_rows.items())

    def refresh_links(self) -> None:
        """Copy the current data of linked leaves into their mirror rows here."""
        v = self.vals
        for row, leaf in self._link_rows.items():
            v[row] = leaf.data

    # -- element access ---------------------------------------------------------------

    def value(self, i: int) -> float:
        return self.vals[i]

    def set_value(self, i: int, x: float) -> None:
        self.vals[i] = x

    def grad(self, i: int) -> float:
        return self.grads[i]

    def set_grad(self, i: int, g: float) -> None:
        self.grads[i] = g

    def add_grads(self, rows: np.ndarray, g: np.ndarray) -> None:
        """``grad[rows] += g`` with repeated rows accumulated."""
        np.add.at(self._g, rows, g)

    def set_grads(self, rows: np.ndarray, g: np.ndarray) -> None:
        self._g[rows] = g

    def level(self, i: int) -> int:
        self.flush()
        return int(self._lv[i])

    def row(self, i: int) -> tuple[Op, int, int, float]:
        """(op, arg0, arg1, const) of row ``i``."""
        self.flush()
        return OPS[self._op[i]], int(self._a0[i]), int(self._a1[i]), float(self._c[i])

    def label(self, row: int) -> str:
        return self._labels.get(row, "")

    def set_label(self, row: int, text: str) -> None:
        if text:
            self._labels[row] = text
        else:
            self._labels.pop(row, None)

    def set_custom(self, row: int, symbol: str) -> None:
        """Mark ``row`` (a custom row) with the op name the user gave it."""
        self._custom[row] = [symbol, None]

    def custom_symbol(self, row: int) -> str:
        return self._custom[row][0]

    def set_closure(self, row: int, fn: Any) -> None:
        """The ``_backward`` closure of custom ``row``."""
        self._custom[row][1] = fn

    def closure(self, row: int) -> Any:
        """The ``_backward`` closure of custom ``row`` (None when none was set)."""
        entry = self._custom.get(row)
        return entry[1] if entry is not None else None

    def labels(self) -> dict[int, str]:
        """Labels by row (a copy)."""
        return dict(self._labels)

    def describe(self, row: int) -> str:
        """`` 'label' [scope]`` of a row, for error messages ("" when it has neither)."""
        text = ""
        label = self._labels.get(row)
        if label:
            text += f" {label!r}"
        if row < self.count:
            scope_name = self.scope_of(row)
            if scope_name:
                text += f" [{scope_name}]"
        return text

    # -- name scopes -------------------------------------------------------------------

    def mark_scope(self, path: str, row: int | None = None) -> None:
        """Rows recorded from now on (from ``row`` on, for rows just written in bulk)
        belong to scope ``path`` (``""``: none)."""
        row = self.count if row is None else row
        if row < self._mark_rows[-1]:
            raise ValueError(f"scope marks go forward: row {row} is before the last mark")
        sid = self._scope_index.get(path)
        if sid is None:
            sid = self._scope_index[path] = len(self._scope_names)
            self._scope_names.append(path)
        if self._mark_rows[-1] == row:
            self._mark_ids[-1] = sid
        else:
            self._mark_rows.append(row)
            self._mark_ids.append(sid)

    def mark_scopes(self, rows: Sequence[int], paths: list[str], then: str) -> None:
        """Scope marks for rows just written in bulk: from ``rows[k]`` on, ``paths[k]``
        (``rows`` ascending, past the last mark); from the next row recorded on,
        ``then``."""
        index = self._scope_index
        try:
            ids = [index[p] for p in paths]
        except KeyError:                           # a first use of a path
            ids = None
        if ids is None or len(rows) < 2 or rows[0] < self._mark_rows[-1]:
            for row, path in zip(rows, paths):     # one at a time
                self.mark_scope(path, row)
        else:
            if rows[0] == self._mark_rows[-1]:     # the enclosing scope's mark, at the
                self._mark_ids[-1] = ids[0]        # same row: replaced, as mark_scope does
                rows, ids = rows[1:], ids[1:]
            self._mark_rows.extend(rows)
            self._mark_ids.extend(ids)
        self.mark_scope(then)

    def scope_ids(self) -> np.ndarray:
        """Scope id of every row (index into :meth:`scope_names`)."""
        starts = np.array(self._mark_rows + [self.count], np.int64)
        return np.repeat(np.array(self._mark_ids, np.int32), np.diff(starts))

    def scope_names(self) -> tuple[str, ...]:
        return tuple(self._scope_names)

    def scope_marks(self) -> tuple[list[int], list[int]]:
        """(first rows, scope ids) of the runs of rows recorded in one scope."""
        return list(self._mark_rows), list(self._mark_ids)

    def scope_of(self, row: int) -> str:
        k = bisect.bisect_right(self._mark_rows, row) - 1
        return self._scope_names[self._mark_ids[k]]

    # -- whole-column views -----------------------------------------------------------

    def columns(self) -> Columns:
        """Read-only NumPy views of all recorded rows."""
        self.flush()
        n = self.count
        cols = Columns(
            op=self._op[:n], a0=self._a0[:n], a1=self._a1[:n], const=self._c[:n],
            value=self._val[:n], level=self._lv[:n], low=self._low[:n], grad=self._g[:n],
        )
        for arr in cols:
            arr.flags.writeable = False
        return cols

    def row_views(self) -> tuple:
        """What a row-at-a-time pass reads and writes, without flushing: ``(stage,
        flushed, op, a0, a1, const, value, grad)``. Rows before ``flushed`` are in the
        memoryviews, later rows in ``stage`` (five fields each from ``(r - flushed) * 5``:
        opcode, arg0, arg1, const, level); values and grads are always in the views.
        Valid until the next row is recorded."""
        views = self._views
        if views is None:
            views = self._views = (memoryview(self._op), memoryview(self._a0),
                                   memoryview(self._a1), memoryview(self._c))
        opv, a0v, a1v, cv = views
        return self.stage, self._flushed, opv, a0v, a1v, cv, self.vals, self.grads

    def set_values(self, rows: np.ndarray, values: np.ndarray) -> None:
        self._val[rows] = values

    # -- compiled plans cache -------------------------------------------------------------

    def plan(self, key: tuple) -> Any:
        """A plan cached under ``key`` for the current epoch, or None."""
        return self._plans.get((self._epoch,) + key)

    def remember(self, key: tuple, entry: Any, kept: int = 8) -> None:
        """Cache a plan for the current epoch; of each kind (``key[0]``) the ``kept``
        most recent stay."""
        full = (self._epoch,) + key
        plans = {k: v for k, v in self._plans.items() if k[0] == self._epoch and k != full}
        same = [k for k in plans if k[1] == key[0]]
        for old in same[: max(0, len(same) - kept + 1)]:
            del plans[old]
        plans[full] = entry
        self._plans = plans

    def mark_replayed(self) -> None:
        self._replayed = self.count

    # -- liveness: keep what live Values need, drop the rest ------------------------------

    def live_blocks(self) -> list[int]:
        """Indices of blocks something outside this table refers to, and the current one."""
        counts = _refcounts(self._blocks)
        cur = self._blocks.index(self.cur)
        return [k for k, c in enumerate(counts) if c > _TABLE_REFS or k == cur]

    def compact(self) -> int:
        """Drop the rows no live Value needs and slide the rest down; rows freed.

        Kept: every row of a live block (Values address rows by block and offset),
        the closed interval of each of their non-leaf rows and the operands of kept
        rows (:func:`tapegrad._graph.retained`), and each guard whose operands are
        kept and that precedes a kept non-leaf row (a replay of that row checks it).
        """
        self.flush()
        n = self.count
        if n == 0:
            return 0
        if self.count > self.cur_base:          # new rows go to a fresh block: the one they went
            self._new_block()           # to is live only if a Value holds it
        bases = self._bases
        live_k = self.live_blocks()
        ends = bases[1:] + [n]
        starts = np.array([bases[k] for k in live_k], np.int64)
        stops = np.array([ends[k] for k in live_k], np.int64)
        live = _ranges(starts, stops)
        cols = self.columns()
        keep = _graph.retained(cols.a0, cols.a1, cols.level, cols.low, live)
        self._keep_guards(cols, keep)
        kept = int(keep.sum())
        self._reclaim_at = max(self._reclaim_min, 2 * kept)
        if kept == n:
            self.set_limit()
            return 0
        new_index = np.cumsum(keep, dtype=np.int64) - 1
        for col in _COLUMNS:
            arr = getattr(self, col)
            a = arr[:n][keep]
            if col in _ROW_COLUMNS:
                a = np.where(a >= 0, new_index[a], -1)
            arr[:kept] = a
            arr[kept:n] = 0
        self.count = self._flushed = kept
        self._rebuild_blocks(live_k, keep, kept)
        self._labels = {int(new_index[r]): s for r, s in self._labels.items() if keep[r]}
        self._custom = {int(new_index[r]): c for r, c in self._custom.items() if keep[r]}
        self._links = {leaf: int(new_index[r]) for leaf, r in self._links.items() if keep[r]}
        self._link_rows = {r: leaf for leaf, r in self._links.items()}
        self._renumber_scopes(keep, n)
        self._dropped += n - kept
        self._epoch += 1
        self._reserved = 0
        # plans name rows, which moved; a ("structure", ...) entry holds local rows only
        # (the last backward schedule, for the next graph of the same structure)
        self._plans = {(self._epoch,) + k[1:]: v for k, v in self._plans.items()
                       if k[1] == "structure"}
        self._replayed = 0
        self.set_limit()
        return n - kept

    def _keep_guards(self, cols: Columns, keep: np.ndarray) -> None:
        """Keep each guard whose operands are kept and after which a kept non-leaf row
        was recorded (the guard decided what that row's recording did)."""
        guards = np.flatnonzero(np.isin(cols.op, _GUARD_CODES))
        if guards.size == 0:
            return
        inner = np.flatnonzero(keep & (cols.level > 0) & ~np.isin(cols.op, _GUARD_CODES))
        if inner.size == 0:
            return
        ok = guards < inner[-1]
        for args in (cols.a0[guards], cols.a1[guards]):
            ok &= (args < 0) | keep[np.maximum(args, 0)]
        keep[guards[ok]] = True

    def _rebuild_blocks(self, live_k: list[int], keep: np.ndarray, kept: int) -> None:
        """Live blocks keep their objects at their new base; the other kept rows form new
        blocks of at most BLOCK_ROWS rows (nobody refers to them yet)."""
        old_bases = self._bases
        live_set = set(live_k)
        blocks: list[Block] = []
        new_bases: list[int] = []

        def packed(start: int, stop: int) -> None:
            for b in range(start, stop, BLOCK_ROWS):
                blocks.append(Block(self))
                new_bases.append(b)

        kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
        ends = old_bases[1:] + [keep.size]
        pos = 0                                     # first new row not yet in a block
        for k, blk in enumerate(self._blocks):
            if k not in live_set:
                continue
            base = int(kept_before[old_bases[k]])   # a live block's rows are all kept
            packed(pos, base)
            blk.shift += old_bases[k] - base
            blocks.append(blk)
            new_bases.append(base)
            pos = int(kept_before[ends[k]])
        packed(pos, kept)
        if blocks and blocks[-1] is self.cur:          # (empty: it was started above)
            blocks.pop()
            new_bases.pop()
        self._blocks, self._bases = blocks, new_bases
        self._new_block()                             # new rows: a block never moved

    def _renumber_scopes(self, keep: np.ndarray, n: int) -> None:
        kept_before = np.concatenate(([0], np.cumsum(keep)))
        starts = kept_before[np.minimum(np.array(self._mark_rows), n)]
        ids = np.array(self._mark_ids)
        last = np.append(starts[1:] != starts[:-1], True)     # later marks at a row win
        starts, ids = starts[last], ids[last]
        change = np.append(True, ids[1:] != ids[:-1])          # drop repeated scopes
        starts, ids = starts[change], ids[change]
        # release the names no row uses any more (the open scope's path stays)
        used = np.unique(np.append(ids, self._mark_ids[-1]))
        names = [self._scope_names[k] for k in used.tolist()]
        if used[0] != 0:
            names.insert(0, "")
            used = np.insert(used, 0, 0)
        remap = np.zeros(len(self._scope_names), np.int64)
        remap[used] = np.arange(used.size)
        self._mark_rows, self._mark_ids = starts.tolist(), remap[ids].tolist()
        if self._mark_rows[0] != 0:
            self._mark_rows.insert(0, 0)
            self._mark_ids.insert(0, 0)
        self._scope_names = names
        self._scope_index = {name: k for k, name in enumerate(names)}

    # -- loading -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The rows as plain data, in the form :meth:`load_columns` takes (pickling)."""
        cols = self.columns()
        codes = {op.name: op.code for op in OPS}
        return {"op": cols.op.copy(), "args": np.stack([cols.a0, cols.a1], axis=1),
                "const": cols.const.copy(), "value": cols.value.copy(),
                "grad": cols.grad.copy(), "level": cols.level.copy(),
                "opnames": [op.name for op in OPS], "labels": dict(self._labels),
                "scopes": list(self._scope_names), "codes": codes,
                "mark_rows": np.array(self._mark_rows, np.int64),
                "mark_ids": np.array(self._mark_ids, np.int64),
                "custom": {row: entry[0] for row, entry in self._custom.items()}}

    def extract(self, rows: np.ndarray) -> dict[str, Any]:
        """The ``rows`` (ascending tape rows, closed under operands) renumbered ``0..k-1``,
        as plain data in the form :meth:`load_columns` takes; see ``Tape.subtape``.

        Values are the current ones (mirrors of other tapes' leaves refreshed first);
        labels and scopes follow their rows; mirrored leaves become plain leaves.
        """
        if self._links:
            self.refresh_links()
        cols = self.columns()
        n = self.count
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise TypeError(f"rows must be a 1-D int array, got {rows.dtype} of shape "
                            f"{rows.shape}")
        rows = rows.astype(np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= n or np.any(np.diff(rows) <= 0)):
            raise ValueError(f"rows must be ascending, distinct rows of the tape (0..{n - 1})")
        custom = rows[cols.op[rows] == CUSTOM.code]
        if custom.size:
            row = int(custom[0])
            raise TypeError(
                f"row {row}{self.describe(row)} is a custom row (Value(data, _children, "
                f"{self._custom.get(row, ['?'])[0]!r}) with a Python _backward closure): "
                "it cannot be copied to another tape or process. Build it from tapegrad's "
                "ops (or tapegrad.defop) instead")
        new = np.full(n + 1, -1, np.int64)          # last slot: the -1 operand
        new[rows] = np.arange(rows.size)
        args = np.stack([cols.a0[rows], cols.a1[rows]], axis=1).astype(np.int64)
        moved = new[args]
        if np.any((args >= 0) & (moved < 0)):
            bad = int(rows[np.flatnonzero(((args >= 0) & (moved < 0)).any(axis=1))[0]])
            raise ValueError(f"rows are not closed under operands: row {bad} reads a row "
                             "that is not among them")
        ids = self.scope_ids()[rows]
        starts = np.flatnonzero(np.diff(ids)) + 1 if ids.size else np.zeros(0, np.int64)
        starts = np.concatenate(([0], starts)).astype(np.int64)
        wanted = set(rows.tolist())
        return {"op": cols.op[rows].copy(), "args": moved.astype(np.int32),
                "const": cols.const[rows].copy(), "value": cols.value[rows].copy(),
                "grad": cols.grad[rows].copy(), "level": cols.level[rows].copy(),
                "opnames": [op.name for op in OPS],
                "labels": {int(new[r]): t for r, t in self._labels.items() if r in wanted},
                "scopes": list(self._scope_names), "codes": {op.name: op.code for op in OPS},
                "mark_rows": starts,
                "mark_ids": (ids[starts] if ids.size else np.zeros(1)).astype(np.int64)}

    def load_columns(self, data: dict[str, Any]) -> None:
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
        self.count = self._flushed = n
        self._set_low(0, n)
        self._labels = data["labels"]
        self._scope_names = data["scopes"] or [""]
        self._scope_index = {name: k for k, name in enumerate(self._scope_names)}
        self._mark_rows = data["mark_rows"].astype(int).tolist() or [0]
        self._mark_ids = data["mark_ids"].astype(int).tolist() or [0]
        symbols = data.get("custom", {})
        for row in np.flatnonzero(self._op[:n] == CUSTOM.code).tolist():
            self._custom[row] = [symbols.get(row, ""), _lost_closure(self.name, row)]
        self._blocks, self._bases = [], []
        for b in range(0, n, BLOCK_ROWS):
            self._blocks.append(Block(self))
            self._bases.append(b)
        self._new_block()
        self.set_limit()

    # -- size -------------------------------------------------------------------------

    def nbytes(self) -> int:
        """Bytes the recorded rows occupy in the columns (not counting spare capacity)."""
        return self.count * ROW_BYTES

    def capacity_nbytes(self) -> int:
        return self._cap * ROW_BYTES

    def column_nbytes(self) -> dict[str, int]:
        """Bytes per public column for the recorded rows."""
        n = self.count
        size = {c: np.dtype(t).itemsize for c, t in _COLUMNS.items()}
        return {"opcode": n * size["_op"], "args": n * (size["_a0"] + size["_a1"]),
                "const": n * size["_c"], "value": n * size["_val"], "grad": n * size["_g"],
                "level": n * size["_lv"], "low": n * size["_low"]}


class RetiredRows(Rows):
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


def _lost_closure(tape: str, row: int) -> Any:
    """The ``_backward`` of a custom row read from a file or a pickle: the user's closure
    did not travel with the row, so a backward through it raises instead of passing
    on a zero gradient."""
    def lost() -> None:
        raise RuntimeError(
            f"row {row} of tape {tape!r} is a custom row (Value(data, _children, _op)) read "
            "back from a file or a pickle: its _backward closure was not saved, so its "
            "gradient is unknown. Record it again in this process, or build it from "
            "tapegrad's ops (tapegrad.defop) so that it can be saved")
    return lost


def _refcounts(objects: list) -> list[int]:
    """Reference counts of the objects of a list, each as seen from here."""
    return [sys.getrefcount(objects[k]) for k in range(len(objects))]


_TABLE_REFS = _refcounts([object()])[0]
"""What :func:`_refcounts` reports for an object that only the list refers to."""


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(start, stop)`` for each pair."""
    sizes = stops - starts
    if sizes.sum() == 0:
        return np.empty(0, np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
    return np.arange(sizes.sum(), dtype=np.int64) + offsets
