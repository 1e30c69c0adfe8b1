"""The public :class:`Tape`: a recording of scalar ops, one row each.

The work is split by job: :mod:`tapegrad._rows` holds the columns, staging, blocks
and liveness; :mod:`tapegrad._record` the op recorders; :mod:`tapegrad._context` the
current tape of each thread, scopes, anomaly detection and profiler probes;
:mod:`tapegrad._sweep` the eager backward; :mod:`tapegrad._plan` replay plans and the
backward schedule; :mod:`tapegrad._tapefile` the file format.
"""

from __future__ import annotations

import ctypes
import os
import time
import weakref
from typing import Any

import numpy as np

from . import _context, _plan, _stats, _sweep, _tapefile
from ._context import (
    add_probe,
    current_tape,
    detect_anomaly,
    entered_tapes,
    probes,
    remove_probe,
    rows_recorded,
    scope,
)
from ._record import new_value
from ._rows import ROW_BYTES, ResetTapeError, Rows

__all__ = ["Tape", "current_tape", "scope", "detect_anomaly", "ResetTapeError", "ROW_BYTES",
           "rows_recorded", "add_probe", "remove_probe", "probes", "entered_tapes"]

_RECLAIM_MIN_ROWS = 1 << 20  # a reclaiming tape never compacts below this size
_TRIM_BYTES = 1 << 22        # reset() of buffers this large asks the allocator to trim
_names = iter(range(1, 1 << 62))


class Tape:
    """A recording of scalar ops, one row per op, in NumPy structure-of-arrays buffers.

    ``with Tape() as t:`` makes ``t`` the current tape of this thread; ops on Values
    recorded there land on ``t``. Without any ``with`` block, each thread records on
    its own default tape, which reclaims rows no live Value needs (micrograd-style
    loops build a new graph every step and never say so).

    Parameters
    ----------
    name : str, optional
        Shown in errors, dumps and pictures. Defaults to ``"tape-<n>"``.
    reclaim : bool, default False
        Compact the tape automatically (see :meth:`compact`) whenever it grows past
        ``max(reclaim_min_rows, 2 × rows kept by the last compaction)``. The default
        tape does; explicit tapes do not, so their rows stay where they are until
        :meth:`reset` or :meth:`compact`.
    reclaim_min_rows : int, default 2**20
        The smallest size at which automatic compaction runs.

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If ``reclaim_min_rows`` is not a positive int.

    Examples
    --------
    >>> from tapegrad import Tape, Value
    >>> with Tape("demo") as t:
    ...     x = Value(3.0)
    ...     y = x * x + 1
    >>> len(t), y.tape is t
    (3, True)
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
        self._rows = Rows(self.name, self.reclaim, reclaim_min_rows, weakref.ref(self))

    @classmethod
    def of(cls, rows: Rows) -> Tape:
        """The public Tape of ``rows`` (a new handle if the original was dropped).

        Parameters
        ----------
        rows : tapegrad._rows.Rows
            The rows object behind a tape (what :meth:`rows_object` returns).

        Returns
        -------
        Tape
        """
        rows.check_alive()
        tape = rows.owner()
        if tape is None:
            tape = cls.__new__(cls)
            tape.name = rows.name
            tape.reclaim, tape.reclaim_min_rows = rows.reclaims, rows.reclaim_min_rows
            object.__setattr__(tape, "_rows", rows)      # a handle on existing rows
            rows.owner = weakref.ref(tape)
        return tape

    def rows_object(self) -> Rows:
        """The rows behind this tape (what Values of this tape refer to).

        Returns
        -------
        tapegrad._rows.Rows
        """
        return self._rows

    # -- context ----------------------------------------------------------------------

    def __enter__(self) -> Tape:
        stack = _context.state.stack
        (stack[-1] if stack else _context.state.default).rows_object().leave_thread()
        stack.append(self)
        self._rows.enter_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _context.state.stack
        if not stack or stack[-1] is not self:
            raise RuntimeError(f"tape {self.name!r} exited out of order")
        stack.pop()
        self._rows.leave_thread()
        (stack[-1] if stack else _context.state.default).rows_object().enter_thread()

    # -- size and lifetime --------------------------------------------------------------

    def __len__(self) -> int:
        return self._rows.size

    def __repr__(self) -> str:
        return f"Tape(name={self.name!r}, rows={len(self)})"

    @property
    def epoch(self) -> int:
        """An int that changes whenever the tape's rows move (:meth:`compact`,
        :meth:`reset`)."""
        return self._rows.epoch

    def reset(self) -> None:
        """Free every row; Values recorded before raise :class:`ResetTapeError` when used.

        The buffers go back to the operating system: after freeing large ones, the C
        allocator is asked to release its free memory (glibc's ``malloc_trim``), which
        it would otherwise keep for later allocations.
        """
        old = self._rows
        large = old.capacity_nbytes() >= _TRIM_BYTES
        self._rows = Rows(self.name, self.reclaim, self.reclaim_min_rows, weakref.ref(self))
        self._rows.threads_from(old)
        old.retire()
        if large:
            _release_free_memory()

    def forward(self) -> None:
        """Replay: recompute every non-leaf row from the current leaf values, in place.

        Leaf values are whatever ``Value.data`` holds now (an optimizer step, new
        inputs), including leaves of other tapes linked into this one. Afterwards
        ``.data`` of every Value and ``backward()`` behave as if the recorded code had
        run again (bit for bit for + - * / relu abs neg sqrt; NumPy's tanh, exp, log,
        sigmoid, sin, cos and pow may differ from Python's math in the last bit or
        two).

        The first call compiles a plan (levels, folded sum and product chains); later
        calls reuse it while the tape's rows stay the same. An empty tape does nothing.

        Raises
        ------
        GuardError
            If a recorded comparison would come out differently: the recording no
            longer describes the program.
        FloatingPointError
            Under :class:`detect_anomaly`, at the first row that produces nan or inf.

        Examples
        --------
        >>> from tapegrad import Tape, Value
        >>> with Tape() as t:
        ...     x = Value(2.0)
        ...     y = x * x
        >>> x.data = 3.0
        >>> t.forward()
        >>> y.data
        9.0
        """
        rows = self._rows
        if rows.size == 0:
            return
        probe = _context.innermost_probe()
        timing = _sweep.Timing() if probe is not None else None
        start = time.perf_counter()
        if rows.has_links():
            rows.refresh_links()
        cols = rows.columns()
        n = rows.size
        plan = rows.plan(("forward", n))
        if plan is None:
            plan = _plan.Plan.build(cols, np.arange(n), np.empty(0, np.int64))
            rows.remember(("forward", n), plan, kept=1)
        values = plan.new_values()
        values[:n] = cols.value
        plan.run(values, rows.describe, timing, anomaly=bool(_context.anomaly.depth))
        rows.set_values(plan.evaluated, values[plan.evaluated])
        rows.mark_replayed()
        if probe is not None and hasattr(probe, "on_replay"):
            probe.on_replay(self.name, n, time.perf_counter() - start, timing)

    def backward_from(self, row: int) -> None:
        """``backward()`` of the Value at ``row`` (see :meth:`tapegrad.Value.backward`).

        Parameters
        ----------
        row : int
            The row of the root on this tape.
        """
        _sweep.run_backward(self._rows, row)

    def value(self, row: int) -> Any:
        """A Value for ``row`` of this tape (e.g. a row seen in a dump, or after load).

        Parameters
        ----------
        row : int
            A row number, ``0 <= row < len(tape)``.

        Returns
        -------
        Value

        Raises
        ------
        TypeError
            If ``row`` is not an int.
        IndexError
            If ``row`` is not on this tape.
        """
        rows = self._rows
        self._check_row(row)
        return new_value(rows, int(row), rows.level(int(row)))

    def row_of(self, v: Any) -> int:
        """Row of Value ``v`` on this tape.

        Parameters
        ----------
        v : Value
            A Value of this tape, or a leaf of another tape used here.

        Returns
        -------
        int
            Its own row, or the row mirroring it when it is a leaf of another tape.

        Raises
        ------
        ValueError
            If ``v`` is neither.
        """
        rows = self._rows
        if v.tape is self:
            return v.row
        mirror = rows.linked_row(v)
        if mirror is None:
            raise ValueError(f"{v!r} is not recorded on tape {self.name!r}")
        return mirror

    def _check_row(self, row: object) -> None:
        if not isinstance(row, (int, np.integer)) or isinstance(row, bool):
            raise TypeError(f"row must be an int, got {type(row).__name__}")
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} is not on tape {self.name!r} ({len(self)} rows)")

    # -- saving and loading ---------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the tape to ``path`` as a ``.npz`` (plain arrays, no pickle).

        Rows, values, gradients, labels and scopes round-trip bit for bit through
        :meth:`load`. Leaves linked from other tapes are saved as plain leaves. Custom
        rows (``Value(data, _children, _op)``) keep their values but not their Python
        ``_backward`` closures: a backward through one of them after loading raises
        ``RuntimeError``; pickling does the same.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.
        """
        rows = self._rows
        mark_rows, mark_ids = rows.scope_marks()
        _tapefile.write(path, self.name, rows.columns(), rows.labels(),
                        list(rows.scope_names()), mark_rows, mark_ids)

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> Tape:
        """Read a tape written by :meth:`save`; ``tape.value(row)`` gives its Values.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save`.
        name : str, optional
            The new tape's name (default: the name saved in the file).

        Returns
        -------
        Tape
            A new tape holding the saved rows.

        Raises
        ------
        ValueError
            If the file is truncated, corrupted, foreign or of another version (nothing
            in it is executed: pickles are refused).
        """
        data = _tapefile.read(path)
        tape = cls(name if name is not None else str(data["name"]))
        tape.rows_object().load_columns(data)
        return tape

    def __reduce__(self) -> tuple:
        """Pickles the rows (values, gradients, labels, scopes, custom rows' op names, but
        not their closures), as :meth:`save` does; Values pickle on their own (leaves,
        as new leaves)."""
        return _unpickle_tape, (self.name, self.reclaim, self.reclaim_min_rows,
                                self._rows.state())

    def subtape(self, rows: Any, name: str | None = None) -> Tape:
        """A new tape holding copies of ``rows``, renumbered compactly.

        Row ``k`` of the new tape is a copy of ``rows[k]`` (op, operands renumbered,
        immediate, current value and gradient, level, label, scope). ``rows`` must be
        closed under operands (every operand of a row is among them): the ancestors of
        some rows, say, as :attr:`Function.rows` are. Leaves of other tapes linked into
        this one become plain leaves holding their current values. This is how a
        :class:`~tapegrad.Function` pickles only what it evaluates.

        Parameters
        ----------
        rows : array_like of int
            Ascending, distinct rows of this tape.
        name : str, optional
            The new tape's name (default: ``"<this name>/sub"``).

        Returns
        -------
        Tape
            A new explicit tape (no reclaiming) with ``len(rows)`` rows.

        Raises
        ------
        TypeError
            If ``rows`` is not a 1-D int array, or holds a custom row (made with
            ``Value(data, _children, _op)``: its ``_backward`` is a Python closure).
        ValueError
            If ``rows`` is not ascending and distinct on this tape, or not closed under
            operands.
        """
        state = self._rows.extract(np.asarray(rows))
        tape = Tape(name if name is not None else f"{self.name}/sub")
        tape.rows_object().load_columns(state)
        return tape

    def compact(self) -> int:
        """Drop the rows no live Value needs and slide the rest down.

        Live Values keep working (they follow their rows); a row stays when a live
        Value depends on it (docs/design.md#memory). Row numbers seen before (dumps,
        ``values[i]``) change.

        Returns
        -------
        int
            The number of rows freed.
        """
        return self._rows.compact()

    @property
    def nbytes(self) -> int:
        """Bytes the recorded rows occupy (rows × 41), an int; spare capacity is not
        counted."""
        return self._rows.nbytes()

    # -- read-only views of the rows -------------------------------------------------------

    def columns(self) -> _sweep.Columns:
        """All columns at once as read-only views.

        Cheaper than the properties below when several are needed.

        Returns
        -------
        tapegrad._sweep.Columns
            A named tuple of NumPy arrays: ``op``, ``a0``, ``a1``, ``const``,
            ``value``, ``level``, ``low`` and ``grad``.
        """
        return self._rows.columns()

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
        """The label given to ``row`` (``""`` when none).

        Parameters
        ----------
        row : int
            A row of this tape.

        Returns
        -------
        str
        """
        return self._rows.label(row)

    @property
    def labels(self) -> dict[int, str]:
        """Labels by row (a copy)."""
        return self._rows.labels()

    @property
    def scope_ids(self) -> np.ndarray:
        """Name-scope id of every row; ``scope_names[id]`` is its path, ``""`` for none."""
        ids = self._rows.scope_ids()
        ids.flags.writeable = False
        return ids

    @property
    def scope_names(self) -> tuple[str, ...]:
        """Scope paths by id (``"layer1/neuron3"``); id 0 is ``""``, outside any scope."""
        return self._rows.scope_names()

    def describe(self, row: int) -> str:
        """`` 'label' [scope]`` of ``row``, for messages (``""`` when it has neither).

        Parameters
        ----------
        row : int
            A row of this tape.

        Returns
        -------
        str
        """
        return self._rows.describe(row)

    def stats(self) -> _stats.TapeStats:
        """Size, op mix, level widths, fan-out, longest chain and memory of the tape.

        Vectorized: seconds on a 10^7-row tape.

        Returns
        -------
        tapegrad._stats.TapeStats
            The figures; its ``.to_dict()`` is JSON-serialisable.
        """
        rows = self._rows
        return _stats.stats(rows.columns(), rows.column_nbytes())

    def dump(self, max_lines: int = 40) -> str:
        """A readable listing of the rows, one per line.

        Parameters
        ----------
        max_lines : int, default 40
            Beyond this many rows, only the head and the tail are listed (an int >= 2).

        Returns
        -------
        str
            Lines such as::

                %12 = mul %3 %7            # data 0.5 grad -1.25  [layer1/neuron3]

        Raises
        ------
        ValueError
            If ``max_lines`` is not an int >= 2.
        """
        if not isinstance(max_lines, int) or isinstance(max_lines, bool) or max_lines < 2:
            raise ValueError(f"max_lines must be an int >= 2, got {max_lines!r}")
        rows = self._rows
        return _stats.dump(rows.columns(), rows.labels(), rows.scope_ids(),
                           rows.scope_names(), max_lines)

    def scope_of(self, row: int) -> str:
        """The scope path ``row`` was recorded in (``""`` when none).

        Parameters
        ----------
        row : int
            A row of this tape.

        Returns
        -------
        str

        Raises
        ------
        TypeError
            If ``row`` is not an int.
        IndexError
            If ``row`` is not on this tape.
        """
        self._check_row(row)
        return self._rows.scope_of(int(row))


def _unpickle_tape(name: str, reclaim: bool, reclaim_min_rows: int,
                   state: dict[str, Any]) -> Tape:
    from .ops import BY_NAME
    unknown = [n for n in state["opnames"] if n not in BY_NAME]
    used = {state["opnames"][c] for c in np.unique(state["op"]).tolist()}
    missing = sorted(used & set(unknown))
    if missing:
        raise ValueError(f"the pickled tape {name!r} uses ops this process does not know: "
                         f"{missing} (define them with tapegrad.defop first)")
    remap = np.array([BY_NAME[n].code if n in BY_NAME else 0 for n in state["opnames"]],
                     np.int8)
    tape = Tape(name, reclaim=reclaim, reclaim_min_rows=reclaim_min_rows)
    tape.rows_object().load_columns({**state, "op": remap[state["op"]]})
    return tape


def _default_tape(name: str) -> Tape:
    return Tape(name, reclaim=True)


_context.set_default_factory(_default_tape)


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
