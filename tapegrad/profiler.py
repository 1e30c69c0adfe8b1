"""Where the time goes: recording versus backward, by phase, op and level group.

::

    with tapegrad.profile() as prof:
        for step in range(5):
            loss = model_loss()          # recording
            loss.backward()              # the reverse sweep
    prof.print_report()                  # a table like PyTorch's profiler prints
    prof.export_chrome_trace("trace.json")   # open in https://ui.perfetto.dev

While a block is active the profiler is a registered probe
(:func:`tapegrad.tape.add_probe`), and every ``Value.backward()`` (and every replay,
``Tape.forward()``) hands it the seconds it took and a :class:`tapegrad._sweep.Timing`
with the time per phase, per op and per level group. The block's wall time minus those
calls is the time *outside backward/replay*: everything the Python code did, recording
rows included, but also imports, I/O and plotting, so it is not the cost of recording.
Rows recorded are differences of :func:`tapegrad.tape.rows_recorded` (monotonic, every
tape and thread of the process).

The probe only appends a record per call; tables and traces are built when asked for,
so the overhead on a backward pass is the sweep's own stopwatch reads (about 1%).
"""

from __future__ import annotations

import html
import json
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from time import perf_counter
from typing import IO, Any, NamedTuple

from . import tape as _tape

__all__ = ["profile"]

KINDS = ("backward", "replay")
"""The kinds of calls the profiler times (``on_backward`` and ``on_replay``)."""

# The phase of a call that contains its per-op times, and the one that contains its
# level groups; when a call has none of these, they are shown directly under the call.
_OPS_PHASES = ("partials", "forward", "run", "evaluate", "values", "ops", "kernels")
_GROUP_PHASES = ("levels", "groups", "sweep")

# Level groups are summarised in buckets of rows per group (upper bounds, inclusive).
_BUCKETS = ((16, "<=16 rows"), (1024, "17-1,024 rows"), (None, ">1,024 rows"))

OUTSIDE = "outside backward/replay"
"""The report's first row: wall time outside backward and replay calls (your code,
recording rows included, and everything else the block did)."""

SORT_KEYS = ("total", "time", "self", "calls", "avg", "rows", "ns-per-row", "name")
"""Keys :meth:`profile.report` sorts by (``time`` is ``total``); numbers sort largest
first, ``name`` alphabetically. Rows are sorted among their siblings."""

_TRACE_GROUPS = 64      # level-group spans per call in a trace (the slowest ones)
_MAX_TRACED_GROUPS = 500_000   # level groups kept in full over all traced calls (~60 MB)


class ReportRow(NamedTuple):
    """One row of the timing table (:meth:`profile.table`)."""

    depth: int          # 0: outside / backward / replay; 1: phases; 2: ops and groups
    name: str
    calls: int
    total: float        # seconds
    self: float         # seconds: total minus the rows nested under it
    rows: int
    rate: bool = True   # False: ns/row would not mean anything (the outside row)

    @property
    def avg(self) -> float | None:
        return self.total / self.calls if self.calls else None

    @property
    def ns_per_row(self) -> float | None:
        return _ns(self.total, self.rows) if self.rate else None


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 leaf"``, ``"2 leaves"``: ``n`` with thousands separators and the right form."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


class _Call:
    """One backward or replay, as the probe received it (aggregated when reported)."""

    __slots__ = ("kind", "tape", "rows", "seconds", "end", "phases", "ops", "groups",
                 "tid", "recorded")

    def __init__(self, kind: str, tape: str, rows: int, seconds: float, end: float,
                 timing: Any, tid: int, recorded: int) -> None:
        self.kind = kind
        self.tape = tape
        self.rows = int(rows)
        self.seconds = float(seconds)
        self.end = end              # perf_counter() when the probe was called
        self.tid = tid
        self.recorded = recorded    # rows_recorded() at that moment
        # copies: cheap (a handful of entries, and one list copy in C)
        self.phases: dict[str, float] = dict(getattr(timing, "phases", None) or {})
        self.ops: dict[str, list] = {k: list(v) for k, v in
                                     (getattr(timing, "ops", None) or {}).items()}
        self.groups: list[tuple[int, int, float]] = list(getattr(timing, "groups", None) or ())

    @property
    def start(self) -> float:
        return self.end - self.seconds

    def ops_phase(self) -> str | None:
        """The phase holding the per-op times; None: they hang off the call itself."""
        return next((p for p in _OPS_PHASES if p in self.phases), None)

    def groups_phase(self) -> str | None:
        """The phase holding the level groups; None: they hang off the call itself."""
        return next((p for p in _GROUP_PHASES if p in self.phases), None)


class _Summary:
    """Totals of one kind of call (backward or replay) over many calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self.rows = 0
        self.phases: dict[str, list] = {}     # phase -> [calls, rows, seconds]
        self.ops: dict[str, list] = {}        # op -> [calls, rows, seconds]
        self.ops_parents: set[str | None] = set()      # phases holding ops (None: the call)
        self.groups_parents: set[str | None] = set()
        self.child: dict[str | None, float] = {}  # seconds of ops and groups, per parent
        self.group_count = 0
        self.group_rows = 0
        self.group_seconds = 0.0
        self.buckets = [[0, 0, 0.0] for _ in _BUCKETS]   # [groups, rows, seconds]
        self.widest: tuple[int, int, float] | None = None
        self.slowest: tuple[int, int, float] | None = None
        self.tapes: dict[str, list] = {}      # tape -> [calls, rows, seconds]

    def add(self, call: _Call) -> None:
        self.calls += 1
        self.seconds += call.seconds
        self.rows += call.rows
        entry = self.tapes.setdefault(call.tape, [0, 0, 0.0])
        entry[0] += 1
        entry[1] += call.rows
        entry[2] += call.seconds
        for name, seconds in call.phases.items():
            entry = self.phases.setdefault(name, [0, 0, 0.0])
            entry[0] += 1
            entry[1] += call.rows
            entry[2] += seconds
        op_seconds = 0.0
        for name, (rows, seconds) in call.ops.items():
            entry = self.ops.setdefault(name, [0, 0, 0.0])
            entry[0] += 1
            entry[1] += rows
            entry[2] += seconds
            op_seconds += seconds
        if call.ops:
            parent = call.ops_phase()
            self.ops_parents.add(parent)
            self.child[parent] = self.child.get(parent, 0.0) + op_seconds
        widest, slowest = self.widest, self.slowest
        buckets = self.buckets
        group_seconds = 0.0
        for group in call.groups:
            _, rows, seconds = group
            self.group_count += 1
            self.group_rows += rows
            group_seconds += seconds
            for b, (limit, _) in enumerate(_BUCKETS):
                if limit is None or rows <= limit:
                    bucket = buckets[b]
                    bucket[0] += 1
                    bucket[1] += rows
                    bucket[2] += seconds
                    break
            if widest is None or rows > widest[1]:
                widest = group
            if slowest is None or seconds > slowest[2]:
                slowest = group
        self.widest, self.slowest = widest, slowest
        if call.groups:
            self.group_seconds += group_seconds
            parent = call.groups_phase()
            self.groups_parents.add(parent)
            self.child[parent] = self.child.get(parent, 0.0) + group_seconds

    def copy(self) -> _Summary:
        out = _Summary()
        out.__dict__.update({k: _deep(v) for k, v in self.__dict__.items()})
        return out

    def to_dict(self, kind: str) -> dict[str, Any]:
        def group(g: tuple[int, int, float] | None) -> dict | None:
            return None if g is None else {"level": int(g[0]), "rows": int(g[1]),
                                           "seconds": float(g[2])}

        return {
            f"{kind}_calls": self.calls,
            f"{kind}_seconds": self.seconds,
            f"{kind}_rows": self.rows,
            f"{kind}_ns_per_row": _ns(self.seconds, self.rows),
            f"{kind}_phases": {k: v[2] for k, v in self.phases.items()},
            f"{kind}_ops": {k: {"calls": v[0], "rows": v[1], "seconds": v[2]}
                            for k, v in _by_time(self.ops)},
            f"{kind}_groups": {
                "count": self.group_count, "rows": self.group_rows,
                "seconds": self.group_seconds,
                "buckets": {label: {"count": b[0], "rows": b[1], "seconds": b[2]}
                            for (_, label), b in zip(_BUCKETS, self.buckets)},
                "widest": group(self.widest), "slowest": group(self.slowest),
            },
            f"{kind}_tapes": {k: {"calls": v[0], "rows": v[1], "seconds": v[2]}
                              for k, v in self.tapes.items()},
        }


def _deep(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _deep(x) for k, x in v.items()}
    if isinstance(v, (list, set)):
        return type(v)(_deep(x) for x in v)
    return v


def _by_time(entries: dict[str, list]) -> list[tuple[str, list]]:
    return sorted(entries.items(), key=lambda kv: -kv[1][2])


def _ns(seconds: float, rows: int) -> float | None:
    return seconds / rows * 1e9 if rows else None


class profile:
    """Time recording and every backward (and replay) pass run inside the block.

    ``with profile() as prof:`` works on every thread's tapes (the probe and the row
    counter are process-wide). Blocks may nest or overlap: each active profiler sees
    every call. A profiler is used once; the results stay readable after the block,
    and may be read inside it too (then up to now).

    Parameters
    ----------
    max_traced_calls : int, default 1000
        Calls kept in full for :meth:`export_chrome_trace`; later calls only count in
        the totals (the trace says how many were left out). Tracing also stops once
        the kept calls hold 500,000 level groups (deep graphs).

    Raises
    ------
    ValueError
        If ``max_traced_calls`` is not an int >= 0.
    RuntimeError
        On entering a profiler a second time.

    Examples
    --------
    >>> from tapegrad import Value, profile
    >>> with profile() as prof:
    ...     x = Value(2.0)
    ...     (x * x).backward()
    >>> prof.backward_calls
    1
    """

    def __init__(self, max_traced_calls: int = 1000) -> None:
        if not isinstance(max_traced_calls, int) or isinstance(max_traced_calls, bool) \
                or max_traced_calls < 0:
            raise ValueError(f"max_traced_calls must be an int >= 0, got {max_traced_calls!r}")
        self.max_traced_calls = max_traced_calls
        self._state = "new"            # "new" -> "active" -> "done"
        self._start = self._end = 0.0
        self._rows_start = self._rows_end = 0
        self._tid = 0
        self._calls: list[_Call] = []  # the traced calls, in order
        self._tracing = True           # False once a call was past the limits
        self._kept_groups = 0
        self._folded = {kind: _Summary() for kind in KINDS}   # calls past the limits
        self._untraced = 0
        self._counts = dict.fromkeys(KINDS, 0)
        self._seconds = dict.fromkeys(KINDS, 0.0)
        self._overhead = 0.0

    # -- the block --------------------------------------------------------------------

    def __enter__(self) -> profile:
        if self._state != "new":
            raise RuntimeError("a profile() block can be entered only once; "
                               "create a new profile() for another block")
        self._state = "active"
        self._tid = threading.get_native_id()
        self._rows_start = _tape.rows_recorded()
        self._start = perf_counter()
        _tape.add_probe(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = perf_counter()
        _tape.remove_probe(self)
        self._rows_end = _tape.rows_recorded()
        self._state = "done"

    @property
    def active(self) -> bool:
        """True inside the block (between ``__enter__`` and ``__exit__``)."""
        return self._state == "active"

    @property
    def tracing(self) -> bool:
        """False once a call went past ``max_traced_calls`` or the level-group budget."""
        return self._tracing

    # -- the probe (called by the tape) ----------------------------------------------

    def on_backward(self, tape_name: str, rows: int, seconds: float, timing: Any) -> None:
        """Called by the tape after every ``Value.backward()`` (not meant for user code).

        Parameters
        ----------
        tape_name : str
            The tape's name.
        rows : int
            Rows the backward swept.
        seconds : float
            Its duration.
        timing : tapegrad._sweep.Timing
            Its time per phase, op and level group.
        """
        _deliver("backward", tape_name, rows, seconds, timing)

    def on_replay(self, tape_name: str, rows: int, seconds: float, timing: Any) -> None:
        """Called by the tape after every replay (``Tape.forward()``); as
        :meth:`on_backward`."""
        _deliver("replay", tape_name, rows, seconds, timing)

    def add_call(self, call: _Call) -> None:
        """Count one call (not meant for user code).

        The probe dispatch calls this on every active profiler.
        """
        self._counts[call.kind] += 1
        self._seconds[call.kind] += call.seconds
        if self._tracing and len(self._calls) < self.max_traced_calls and \
                self._kept_groups + len(call.groups) <= _MAX_TRACED_GROUPS:
            self._calls.append(call)
            self._kept_groups += len(call.groups)
        else:
            self._tracing = False
            self._untraced += 1
            self._folded[call.kind].add(call)

    def add_overhead(self, seconds: float) -> None:
        """Charge ``seconds`` of the probe dispatch to the profiler's own overhead."""
        self._overhead += seconds

    # -- numbers --------------------------------------------------------------------

    def _now(self) -> tuple[float, int]:
        """(end time, rows recorded at the end): now while the block is active."""
        if self._state == "active":
            return perf_counter(), _tape.rows_recorded()
        return self._end, self._rows_end

    @property
    def wall_seconds(self) -> float:
        """Wall time of the block in seconds (up to now while it runs; 0 before)."""
        return 0.0 if self._state == "new" else self._now()[0] - self._start

    @property
    def rows_recorded(self) -> int:
        """Rows recorded on all tapes and threads during the block (up to now while it
        runs; 0 before)."""
        return 0 if self._state == "new" else self._now()[1] - self._rows_start

    @property
    def outside_seconds(self) -> float:
        """Seconds of wall time outside backward and replay calls (and the profiler's
        own time).

        That is your code, recording rows included, and whatever else ran (imports,
        I/O, plotting): not the cost of recording alone.
        """
        calls = sum(self._seconds.values())
        return max(0.0, self.wall_seconds - calls - self._overhead)

    @property
    def record_seconds(self) -> float:
        """Deprecated name of :attr:`outside_seconds` (it never was recording alone).

        Reading it warns with a ``DeprecationWarning``.
        """
        warnings.warn("profile.record_seconds is deprecated: it is the time outside "
                      "backward/replay, not recording alone; use outside_seconds",
                      DeprecationWarning, stacklevel=2)
        return self.outside_seconds

    @property
    def overhead_seconds(self) -> float:
        """Seconds the profiler itself spent taking the calls."""
        return self._overhead

    @property
    def backward_calls(self) -> int:
        """Number of ``backward()`` calls seen."""
        return self._counts["backward"]

    @property
    def backward_seconds(self) -> float:
        """Seconds spent in ``backward()`` calls."""
        return self._seconds["backward"]

    @property
    def replay_calls(self) -> int:
        """Number of replays seen."""
        return self._counts["replay"]

    @property
    def replay_seconds(self) -> float:
        """Seconds spent in replays."""
        return self._seconds["replay"]

    def _summary(self, kind: str) -> _Summary:
        out = self._folded[kind].copy()
        for call in self._calls:
            if call.kind == kind:
                out.add(call)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary of the block.

        Returns
        -------
        dict
            The time outside backward/replay, backward and replay totals, with the
            backward (and replay) time per phase, op, level-group bucket and tape.
        """
        out: dict[str, Any] = {
            "wall_seconds": self.wall_seconds,
            "outside_seconds": self.outside_seconds,
            "rows_recorded": self.rows_recorded,
            "overhead_seconds": self._overhead,
            "traced_calls": len(self._calls),
            "untraced_calls": self._untraced,
        }
        for kind in KINDS:
            out.update(self._summary(kind).to_dict(kind))
        return out

    # -- the table --------------------------------------------------------------------

    def table(self, top: int | None = None, sort: str | None = None) -> list[ReportRow]:
        """The rows of the timing table.

        The time outside backward/replay, one row per kind of call, and nested rows for
        phases, ops (slowest first) and level groups. *Self* is a row's time minus its
        children's, so the Self column adds up to the wall time of the block (less the
        profiler's overhead).

        Parameters
        ----------
        top : int, optional
            Show at most this many ops per kind of call (the rest as one row).
        sort : str, optional
            One of :data:`SORT_KEYS`, to order siblings; by default phases keep the
            order they ran in.

        Returns
        -------
        list of ReportRow
            In depth-first order.

        Raises
        ------
        ValueError
            If ``top`` is not a positive int or ``sort`` not a known key.
        """
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
            raise ValueError(f"top must be a positive int or None, got {top!r}")
        if sort is not None and sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)} or None, "
                             f"got {sort!r}")
        outside = self.outside_seconds
        rows = [ReportRow(0, OUTSIDE, 1, outside, outside, self.rows_recorded, rate=False)]
        for kind in KINDS:
            s = self._summary(kind)
            if kind == "backward" or s.calls:
                rows += [ReportRow(*r) for r in _kind_rows(kind, s, top)]
        return rows if sort is None else _sorted_rows(rows, sort)

    def notes(self) -> list[str]:
        """The lines under the table: wall time, rows, level groups, untraced calls.

        Returns
        -------
        list of str
        """
        wall, rows = self.wall_seconds, self.rows_recorded
        notes = [f"wall {fmt_time(wall)}; {plural(rows, 'row')} recorded; "
                 f"{OUTSIDE}: your code and the recording of rows (also imports, I/O, "
                 f"plotting: not recording alone); profiler overhead "
                 f"{fmt_time(self._overhead)}"]
        for kind in KINDS:
            s = self._summary(kind)
            if s.group_count:
                w, sl = s.widest, s.slowest
                notes.append(
                    f"{kind} level groups: {s.group_count:,} in {plural(s.calls, 'call')}; "
                    f"widest {plural(w[1], 'row')} (level {w[0]:,}, {fmt_time(w[2])}); "
                    f"slowest {fmt_time(sl[2])} (level {sl[0]:,}, {plural(sl[1], 'row')})")
        if self._untraced:
            notes.append(f"{plural(self._untraced, 'call')} after the first "
                         f"{len(self._calls):,} {'is' if self._untraced == 1 else 'are'} in "
                         "the totals but not in the trace (max_traced_calls="
                         f"{self.max_traced_calls:,}, or 500,000 level groups)")
        return notes

    def report(self, top: int | None = None, sort: str | None = None) -> str:
        """The timing table (:meth:`table`) as text, with :meth:`notes` under it.

        Parameters
        ----------
        top, sort
            As for :meth:`table`.

        Returns
        -------
        str
        """
        text = _format_table(self.table(top, sort), self.wall_seconds)
        return text + "\n" + "\n".join(self.notes())

    def print_report(self, top: int | None = None, file: IO[str] | None = None,
                     sort: str | None = None) -> None:
        """Print :meth:`report`.

        Parameters
        ----------
        top, sort
            As for :meth:`table`.
        file : file-like, optional
            Where to print (default ``sys.stdout``).
        """
        print(self.report(top, sort), file=file)

    # -- notebooks --------------------------------------------------------------------

    def _repr_html_(self) -> str:
        """The timing table as an HTML table (Jupyter shows it for ``prof``)."""
        wall = self.wall_seconds
        head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEAD)
        body = []
        for r in self.table():
            cells = _cells(r, wall)
            name = (f'<td style="text-align:left;padding-left:{0.5 + 1.5 * r.depth}em">'
                    f"{html.escape(cells[0])}</td>")
            body.append("<tr>" + name + "".join(f"<td>{html.escape(c)}</td>"
                                                for c in cells[1:]) + "</tr>")
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes())
        return (f"<div><p><b>{html.escape(repr(self))}</b></p>"
                f'<table style="text-align:right"><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>{notes}</div>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """IPython's pretty printer: the summary line, then the report."""
        p.text(repr(self) if cycle else repr(self) + "\n" + self.report())

    # -- the trace --------------------------------------------------------------------

    def chrome_trace(self) -> dict[str, Any]:
        """The trace :meth:`export_chrome_trace` writes.

        Returns
        -------
        dict
            Chrome trace-event JSON as a dict (``traceEvents``, ``displayTimeUnit``,
            and :meth:`to_dict` under ``otherData``).
        """
        pid = os.getpid()
        start = self._start
        end, rows_end = self._now()

        def us(t: float) -> float:
            return round((t - start) * 1e6, 3)

        events: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": self._tid,
             "args": {"name": "tapegrad"}},
        ]
        for tid in sorted({self._tid} | {c.tid for c in self._calls}):
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": "main" if tid == self._tid else f"thread {tid}"}})

        def span(name: str, cat: str, t0: float, t1: float, tid: int, **args: Any) -> None:
            event = {"name": name, "cat": cat, "ph": "X", "ts": us(t0),
                     "dur": round(max(0.0, t1 - t0) * 1e6, 3), "pid": pid, "tid": tid}
            if args:
                event["args"] = args
            events.append(event)

        span("profile", "profile", start, end, self._tid, rows_recorded=rows_end -
             self._rows_start, backward_calls=self.backward_calls,
             replay_calls=self.replay_calls)
        # outside: the gaps between calls on the profiling thread (rows: recorded in them)
        last, recorded = start, self._rows_start
        for call in self._calls:
            if call.tid != self._tid:
                continue
            if call.start > last:
                span("outside", "outside", last, call.start, self._tid,
                     rows=call.recorded - recorded)
            last, recorded = max(last, call.end), call.recorded
        if not self._untraced and end > last:
            span("outside", "outside", last, end, self._tid, rows=rows_end - recorded)
        for call in self._calls:
            _call_spans(call, span)
        if self._untraced:
            events.append({"name": f"trace ends: {plural(self._untraced, 'later call')} not traced",
                           "ph": "i", "s": "g", "ts": us(last), "pid": pid,
                           "tid": self._tid})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"tapegrad_profile": self.to_dict()}}

    def export_chrome_trace(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace as Chrome trace-event JSON.

        Open it at https://ui.perfetto.dev or chrome://tracing: an ``outside`` span for
        each stretch between calls (your code and recording; ``args.rows`` holds the rows
        recorded in it), one span per backward (and replay) with its phases
        nested, per-op spans inside the partials phase and the slowest level groups
        inside the levels phase (their start times are approximate: summed durations).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        TypeError
            If ``path`` is not a str or os.PathLike.
        IsADirectoryError
            If ``path`` is a directory.
        FileNotFoundError
            If its directory does not exist.
        """
        target = output_path(path, "export_chrome_trace")
        with open(target, "w", encoding="utf-8") as f:
            json.dump(self.chrome_trace(), f)
        return target

    def __repr__(self) -> str:
        return (f"<tapegrad.profile {self._state}: {plural(self.rows_recorded, 'row')} "
                f"recorded, {plural(self.backward_calls, 'backward call')}, "
                f"{plural(self.replay_calls, 'replay')} in {fmt_time(self.wall_seconds)}>")


def _deliver(kind: str, tape_name: str, rows: int, seconds: float, timing: Any) -> None:
    """Hand one call to every active profiler (the tape calls only the innermost)."""
    end = perf_counter()
    active = [p for p in _tape.probes() if isinstance(p, profile) and p.active]
    traced = any(p.tracing for p in active)
    call = _Call(kind, tape_name, rows, seconds, end, timing, threading.get_native_id(),
                 _tape.rows_recorded() if traced else -1)
    for p in active:
        p.add_call(call)
    spent = perf_counter() - end
    for p in active:
        p.add_overhead(spent)


def output_path(path: object, what: str) -> Path:
    """``path`` as a Path to a file that can be created, or a specific error."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} needs a file path (str or os.PathLike), "
                        f"got {type(path).__name__}")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{what}: {str(target)!r} is a directory, not a file")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{what}: cannot write {str(target)!r}: directory "
                                f"{str(parent)!r} does not exist")
    return target


# -- table rows ----------------------------------------------------------------------

def _kind_rows(kind: str, s: _Summary, top: int | None) -> list[tuple]:
    """(depth, name, count, total, self, rows) rows for one kind of call."""
    ops = _by_time(s.ops)
    shown_ops = ops if top is None else ops[:top]
    op_rows = [(name, v[0], v[2], v[2], v[1]) for name, v in shown_ops]
    if len(shown_ops) < len(ops):
        rest = ops[len(shown_ops):]
        op_rows.append((f"({plural(len(rest), 'more op')})", sum(v[0] for _, v in rest),
                        sum(v[2] for _, v in rest), sum(v[2] for _, v in rest),
                        sum(v[1] for _, v in rest)))
    group_rows = [(label, b[0], b[2], b[2], b[1]) for (_, label), b in zip(_BUCKETS, s.buckets)
                  if b[0]]
    group_rows = [(f"groups {r[0]}", *r[1:]) for r in group_rows]

    # Self times subtract each call's ops and groups from the phase (or the call) that
    # held them; the rows are drawn under that phase when every call agrees on it.
    children: dict[str | None, list[tuple]] = {}
    for parents, rows in ((s.ops_parents, op_rows), (s.groups_parents, group_rows)):
        shown = next(iter(parents)) if len(parents) == 1 else None
        children.setdefault(shown, []).extend(rows)
    phase_seconds = sum(v[2] for v in s.phases.values())
    self_seconds = s.seconds - phase_seconds - s.child.get(None, 0.0)
    out = [(0, kind, s.calls, s.seconds, self_seconds, s.rows)]
    for name, (calls, rows, seconds) in s.phases.items():
        out.append((1, name, calls, seconds, seconds - s.child.get(name, 0.0), rows))
        out += [(2, *r) for r in children.get(name, ())]
    out += [(1, *r) for r in children.get(None, ())]
    return out


_HEAD = ("Name", "Calls", "Total", "Self", "Self %", "Avg", "Rows", "ns/row")

_SORT_FIELD = {"total": "total", "time": "total", "self": "self", "calls": "calls",
               "avg": "avg", "rows": "rows", "ns-per-row": "ns_per_row"}


def _sorted_rows(rows: list[ReportRow], key: str) -> list[ReportRow]:
    """``rows`` (a tree in depth-first order) with each row's children sorted by ``key``."""
    def sort_key(r: ReportRow) -> Any:
        last = r.name.startswith("(")          # "(3 more ops)" stays at the end
        if key == "name":
            return (last, r.name.lower())
        value = getattr(r, _SORT_FIELD[key])
        return (last, value is None, -(value or 0))

    def subtree(k: int) -> tuple[list[ReportRow], int]:
        """The rows under rows[k] (its children's subtrees, sorted); the next index."""
        depth, nodes, j = rows[k].depth, [], k + 1
        while j < len(rows) and rows[j].depth > depth:
            below, end = subtree(j)
            nodes.append((rows[j], below))
            j = end
        nodes.sort(key=lambda node: sort_key(node[0]))
        return [x for head, below in nodes for x in (head, *below)], j

    top, j = [], 0
    while j < len(rows):
        below, end = subtree(j)
        top.append((rows[j], below))
        j = end
    top.sort(key=lambda node: sort_key(node[0]))
    return [x for head, below in top for x in (head, *below)]


def _cells(r: ReportRow, wall: float) -> tuple[str, ...]:
    self_s = max(0.0, r.self)
    return ("  " * r.depth + r.name, f"{r.calls:,}", fmt_time(r.total), fmt_time(self_s),
            f"{self_s / wall * 100:.1f}%" if wall > 0 else "-",
            fmt_time(r.total / r.calls) if r.calls else "-", f"{r.rows:,}",
            _fmt_ns(r.ns_per_row))


def _format_table(rows: Iterable[ReportRow], wall: float) -> str:
    head = _HEAD
    lines = [_cells(r, wall) for r in rows]
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]

    def fmt(r: tuple) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule] + [fmt(r) for r in lines] + [rule])


def fmt_time(seconds: float) -> str:
    """Seconds as ``1.234 s``, ``12.345 ms`` or ``67.8 us``."""
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns:,.0f}" if ns >= 10 else f"{ns:.1f}"


# -- trace spans of one call ---------------------------------------------------------

def _call_spans(call: _Call, span: Any) -> None:
    """Spans of one call: the call, its phases in order, ops and level groups inside."""
    t0, t1 = call.start, call.end
    span(call.kind, call.kind, t0, t1, call.tid, tape=call.tape, rows=call.rows,
         ns_per_row=_ns(call.seconds, call.rows))
    boxes: dict[str | None, list[float]] = {}    # parent -> [next free time, end]
    at = t0
    for name, seconds in call.phases.items():
        p0, p1 = at, min(at + seconds, t1)
        at = p1
        span(name, "phase", p0, p1, call.tid)
        boxes[name] = [p0, p1]
    if not call.phases:
        boxes[None] = [t0, t1]
    box = boxes.get(call.ops_phase())
    if box is not None:
        for op, (rows, sec) in call.ops.items():
            q0 = box[0]
            box[0] = min(q0 + sec, box[1])
            span(op, "op", q0, box[0], call.tid, rows=rows)
    box = boxes.get(call.groups_phase())
    if box is not None and call.groups:
        offsets, q = [], box[0]
        for _, _, sec in call.groups:
            offsets.append(q)
            q += sec
        order = range(len(call.groups))
        if len(call.groups) > _TRACE_GROUPS:
            order = sorted(order, key=lambda k: -call.groups[k][2])[:_TRACE_GROUPS]
        for k in sorted(order):
            level, rows, sec = call.groups[k]
            g0 = min(offsets[k], box[1])
            span(f"level {level}", "level", g0, min(g0 + sec, box[1]), call.tid, rows=rows)
