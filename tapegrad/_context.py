"""Process and thread state: the current tape of each thread, name scopes, anomaly
detection, profiler probes and the count of rows recorded.

Nothing here knows the tape's buffers; :mod:`tapegrad._rows` registers each tape's
rows in :data:`all_rows` and :mod:`tapegrad.tape` installs the factory of the
default tapes.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["current_tape", "entered_tapes", "scope", "detect_anomaly", "rows_recorded",
           "add_probe", "remove_probe", "probes"]

all_rows: weakref.WeakSet = weakref.WeakSet()
"""Every live tape's rows object (tapegrad._rows.Rows)."""

_default_factory: Callable[[str], Any] | None = None   # set by tapegrad.tape


def set_default_factory(factory: Callable[[str], Any]) -> None:
    """Install the function that makes a thread's default tape from its name."""
    global _default_factory
    _default_factory = factory


class _DefaultTape:
    """Holds a thread's default tape; when the thread ends and its state is freed,
    tells the tape it is no longer current there (thread idents are reused)."""

    def __init__(self, tape: Any) -> None:
        self.tape = tape
        self.tid = threading.get_ident()

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        if not _finalizing():              # (at exit, modules are being torn down)
            self.tape.rows_object().forget_thread(self.tid)


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.stack: list[Any] = []      # entered Tapes, outermost first
        self.scope = ""                 # the open scope path
        self._default: _DefaultTape | None = None

    @property
    def default(self) -> Any:
        if self._default is None:
            thread = threading.current_thread()
            name = "default" if thread is threading.main_thread() else f"default[{thread.name}]"
            tape = _default_factory(name)
            tape.rows_object().enter_thread()
            self._default = _DefaultTape(tape)
        return self._default.tape


state = _ThreadState()


class _NoRows:
    """Stands in for :data:`leaf_rows` when no tape is current in exactly one thread."""

    count = limit = cur_tid = 0


leaf_rows: Any = _NoRows()
"""The rows ``Value(x)`` records leaves on without asking :data:`state`, while they
are the current tape's in exactly one thread (``leaf_rows.cur_tid``, its ident): set
and cleared by :class:`tapegrad._rows.Rows` as threads enter and leave tapes."""


def set_leaf_rows(rows: Any) -> None:
    """Make ``rows`` the :data:`leaf_rows` (``None``: forget them)."""
    global leaf_rows
    leaf_rows = _NoRows() if rows is None else rows


def current_tape() -> Any:
    """The tape ops record on in this thread.

    Returns
    -------
    Tape
        The innermost ``with Tape()`` block's tape, else this thread's default tape
        (made on first use).
    """
    stack = state.stack
    return stack[-1] if stack else state.default


def current_rows() -> Any:
    """The rows object of :func:`current_tape`."""
    stack = state.stack
    return (stack[-1] if stack else state.default).rows_object()


def entered_tapes() -> tuple[Any, ...]:
    """This thread's entered tapes (``with Tape()``), outermost first.

    Returns
    -------
    tuple of Tape
        A copy: leave a tape with its ``__exit__``.
    """
    return tuple(state.stack)


class scope:
    """Name the rows recorded inside, on the current tape: ``with scope("layer1"): ...``.

    Scopes nest into paths (``"layer1/neuron3"``); pictures draw them as clusters and
    dumps show them after each row. ``tapegrad.nn`` modules open one per layer and
    neuron. Rows recorded on another tape while a scope is open are not marked.
    A scope object may be reused and nested in itself, but not shared between threads.

    Parameters
    ----------
    name : str
        The scope's name (non-empty); nested scopes join names with ``/``.

    Raises
    ------
    TypeError
        If ``name`` is not a non-empty str.

    Examples
    --------
    >>> from tapegrad import Tape, Value, scope
    >>> with Tape() as t:
    ...     with scope("layer1"), scope("neuron3"):
    ...         y = Value(1.0) * 2
    >>> t.scope_of(y.row)
    'layer1/neuron3'
    """

    __slots__ = ("name", "_paths", "_saved")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"scope name must be a non-empty str, got {name!r}")
        self.name = name
        self._paths: dict[str, str] = {}       # outer path -> this scope's path
        self._saved: list[tuple[str, Any]] = []

    def __enter__(self) -> scope:
        outer = state.scope
        path = self._paths.get(outer)
        if path is None:
            path = self._paths[outer] = f"{outer}/{self.name}" if outer else self.name
        state.scope = path
        rows = current_rows()
        self._saved.append((outer, rows))
        rows.mark_scope(path)
        return self

    def __exit__(self, *exc: object) -> None:
        outer, rows = self._saved.pop()
        state.scope = outer
        rows.mark_scope(outer)


# -- anomaly detection ---------------------------------------------------------------

class _AnomalyState:
    depth = 0       # open detect_anomaly() blocks (all threads)


anomaly = _AnomalyState()


class detect_anomaly:
    """Raise on the first op that produces nan or inf, inside ``with detect_anomaly():``.

    The ``FloatingPointError`` names the op, its row, label and scope and its operands'
    values. Checked while recording, in ``Tape.forward()``/``Function`` replays, and in
    ``backward()`` (the row whose local partial turns a finite gradient into nan or
    inf). Recording takes the checked path for every op meanwhile (slower); it applies
    to all tapes and threads while any block is open.

    Raises
    ------
    FloatingPointError
        Inside the block, at the first op that produces nan or inf.
    """

    def __enter__(self) -> detect_anomaly:
        anomaly.depth += 1
        for rows in list(all_rows):
            rows.set_limit()
        return self

    def __exit__(self, *exc: object) -> None:
        anomaly.depth -= 1
        if not anomaly.depth:
            for rows in list(all_rows):
                rows.set_limit()


# -- profiler probes -------------------------------------------------------------------

_probes: list[Any] = []


def add_probe(probe: Any) -> None:
    """Register a profiler probe: it is told of every backward and replay from now on.

    Only the innermost (last added) probe is called.

    Parameters
    ----------
    probe : object
        Has ``on_backward(tape_name, rows, seconds, timing)`` and optionally
        ``on_replay(tape_name, rows, seconds, timing)``; ``timing`` is a
        :class:`tapegrad._sweep.Timing`.
    """
    _probes.append(probe)


def remove_probe(probe: Any) -> None:
    """Unregister ``probe`` (its latest registration).

    Parameters
    ----------
    probe : object
        A probe given to :func:`add_probe`; one not registered is ignored.
    """
    for k in range(len(_probes) - 1, -1, -1):
        if _probes[k] is probe:
            del _probes[k]
            return


def probes() -> tuple[Any, ...]:
    """The registered probes.

    Returns
    -------
    tuple
        The probes, oldest first.
    """
    return tuple(_probes)


def innermost_probe() -> Any:
    """The probe to tell of a backward or replay (``None`` when nobody listens)."""
    return _probes[-1] if _probes else None


# -- rows recorded -------------------------------------------------------------------

_flushed_total = 0              # rows ever flushed into any tape's columns (this process)
_total_lock = threading.Lock()


def count_flushed(rows: int) -> None:
    """Add ``rows`` newly flushed rows to the process total."""
    global _flushed_total
    with _total_lock:
        _flushed_total += rows


def rows_recorded() -> int:
    """Rows recorded so far in this process, on every tape and thread.

    Returns
    -------
    int
        Monotonic: resetting, compacting or dropping a tape does not lower it; rows read
        by ``Tape.load`` are not recorded and do not count.
    """
    staged = sum(rows.staged() for rows in list(all_rows))
    return _flushed_total + staged
