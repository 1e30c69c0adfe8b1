"""The ``tapegrad`` command line: ``tapegrad profile [options] SCRIPT [ARGS...]``.

``profile`` runs a Python script as ``__main__`` (like ``python SCRIPT ARGS``) on a fresh
reclaiming tape that is the current tape, inside :class:`tapegrad.profile`, then
prints the tape's statistics, the timing table and the top ops. Options go before the
script; everything after it is the script's (as with ``python -m cProfile``).

Exit status: the script's (0 when it finishes or calls ``sys.exit(0)``; 1 when it raises,
after reporting the partial tape; 130 on Ctrl-C), or 2 for a missing script, a syntax
error or bad options.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import runpy
import shutil
import sys
import threading
import traceback
from pathlib import Path
from time import perf_counter
from typing import IO, Any

import numpy as np

from . import __version__
from . import tape as _tape
from ._stats import TapeStats
from .profiler import _fmt_time, _output_path, profile
from .tape import Tape

__all__ = ["main"]

_PROG = "tapegrad profile"
_PLOT_FORMATS = (".png", ".svg", ".pdf")
_DOT_MAX_NODES = 2000


class UsageError(Exception):
    """Bad input found before the script runs: reported in one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:           # --help, --version, usage errors
        return exit.code if isinstance(exit.code, int) else 2
    try:
        return _profile_command(args)
    except UsageError as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapegrad", description="tapegrad tools. Commands: profile.")
    parser.add_argument("--version", action="version", version=f"tapegrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "profile", help="run a script and report its tape and where the time went",
        description="Run SCRIPT as __main__ on a fresh reclaiming tape inside "
                    "tapegrad.profile(), then print the tape's statistics, the timing "
                    "table and the top ops. Options go before SCRIPT; everything after "
                    "SCRIPT is passed to it.",
        usage="tapegrad profile [options] SCRIPT [ARGS...]")
    p.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    script_args = p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                                 help="arguments for the script (its sys.argv[1:])")
    script_args.required = False        # argparse would list it as required when SCRIPT is missing
    p.add_argument("--json", metavar="PATH", help="write the statistics and timings as JSON")
    p.add_argument("--plot", metavar="PATH",
                   help="write a picture of the level widths, the op mix and the backward "
                        "time (.png, .svg or .pdf; needs matplotlib)")
    p.add_argument("--dot", metavar="PATH",
                   help="write a collapsed picture of the tape (.dot/.gv text, or "
                        ".svg/.png/.pdf with Graphviz; needs pydot)")
    p.add_argument("--dot-max-nodes", type=_positive, default=_DOT_MAX_NODES, metavar="N",
                   help=f"largest collapsed picture --dot draws (default {_DOT_MAX_NODES})")
    p.add_argument("--trace", metavar="PATH",
                   help="write a Chrome trace (open in https://ui.perfetto.dev)")
    p.add_argument("--top", type=_positive, default=10, metavar="N",
                   help="ops listed under 'top ops' (default 10)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not print progress to stderr during long runs")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ---------------------------------------------------------------------------------------
# the profile command
# ---------------------------------------------------------------------------------------

def _profile_command(args: argparse.Namespace) -> int:
    _check_script(args.script)
    for option in ("json", "plot", "dot", "trace"):
        path = getattr(args, option)
        if path is not None:
            try:
                _output_path(path, f"--{option}")
            except OSError as err:
                raise UsageError(str(err)) from None
    if args.plot is not None:
        _check_plot(args.plot)
    if args.dot is not None:
        _check_dot(args.dot)

    command = " ".join([args.script, *args.args])
    tape = Tape("profile", reclaim=True)
    prof = profile()
    progress = _Progress(prof, sys.stderr) if args.progress else None
    with prof:
        tape.__enter__()
        try:
            if progress is not None:
                progress.start()
            status, code = _run_script(args.script, args.args)
        finally:
            if progress is not None:
                progress.stop()
            _leave(tape)

    sys.stdout.flush()
    t0 = perf_counter()
    stats = tape.stats()
    stats_seconds = perf_counter() - t0
    summary = prof.to_dict()
    out = sys.stdout
    verb = {"ok": "finished", "error": "raised", "exit": "exited",
            "interrupted": "was interrupted"}[status]
    print(f"\n== {_PROG}: {command} {verb} after {_fmt_time(prof.wall_seconds)} "
          f"(exit status {code}) ==", file=out)
    print(f"\ntape {tape.name!r} at the end (a reclaiming tape keeps live rows and rows "
          f"not reclaimed yet):", file=out)
    print(str(stats), file=out)
    print(f"rows recorded during the run: {prof.rows_recorded:,} (all tapes); "
          f"stats() took {_fmt_time(stats_seconds)}", file=out)
    print("\n" + prof.report(), file=out)
    print("\n" + _top_ops(stats, summary, args.top), file=out)

    data = {"script": args.script, "args": list(args.args), "status": status,
            "exit_code": code, "tape": tape.name, "stats_seconds": stats_seconds,
            **stats.to_dict(), **summary}
    written = []
    try:
        if args.json is not None:
            _write_json(args.json, data)
            written.append(f"JSON to {args.json}")
        if args.trace is not None:
            prof.export_chrome_trace(args.trace)
            written.append(f"trace to {args.trace}")
        if args.plot is not None:
            _plot(args.plot, stats, summary, command)
            written.append(f"plot to {args.plot}")
        if args.dot is not None:
            written.append(_write_dot(args.dot, tape, args.dot_max_nodes))
    except Exception as err:   # an output that could not be written: say which, fail
        if written:
            print("wrote " + "; ".join(written), file=out)
        out.flush()
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return code or 1
    if written:
        print("wrote " + "; ".join(written), file=out)
    return code


def _check_script(path: str) -> None:
    """Fail early (exit 2) on a script that is missing or does not compile."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such script: {path!r}")
    if not p.is_file():
        raise UsageError(f"not a file: {path!r}")
    try:
        compile(p.read_bytes(), path, "exec")
    except SyntaxError as err:
        where = f"line {err.lineno}" if err.lineno else "?"
        raise UsageError(f"{type(err).__name__} in {path!r} at {where}: {err.msg}") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {path!r}: {err}") from None


def _run_script(path: str, script_args: list[str]) -> tuple[str, int]:
    """Run ``path`` as ``__main__``; (status, exit code). Prints the script's traceback."""
    saved_argv, saved_path = sys.argv, sys.path[:]
    sys.argv = [path, *script_args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
        return "ok", 0
    except SystemExit as exit:
        code = exit.code
        if code is None or code == 0:
            return "ok", 0
        if isinstance(code, int):
            return "exit", code
        sys.stdout.flush()
        print(code, file=sys.stderr)       # what Python prints for sys.exit("message")
        return "exit", 1
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"{_PROG}: interrupted; reporting the partial tape", file=sys.stderr)
        return "interrupted", 130
    except Exception as err:
        sys.stdout.flush()
        print(_script_traceback(err, path), end="", file=sys.stderr)
        print(f"{_PROG}: the script raised {type(err).__name__}; reporting the partial tape",
              file=sys.stderr)
        return "error", 1
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _script_traceback(err: BaseException, path: str) -> str:
    """The traceback of ``err`` from the script's first frame on (no runpy frames)."""
    script = os.path.abspath(path)
    tb = err.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))


def _leave(tape: Tape) -> None:
    """Make ``tape`` stop being current, even if the script left other tapes entered."""
    stack = _tape.entered_tapes()
    if stack and stack[-1] is tape:
        tape.__exit__(None, None, None)
        return
    for k in range(len(stack) - 1, -1, -1):
        if stack[k] is tape:
            names = ", ".join(repr(t.name) for t in stack[k + 1:])
            print(f"{_PROG}: warning: the script left tapes entered ({names}); "
                  "leaving them", file=sys.stderr)
            del stack[k:]
            return


class _Progress:
    """Prints rows recorded and backward calls to ``stream`` every ``every`` seconds,
    starting after ``first`` seconds (short runs print nothing)."""

    def __init__(self, prof: profile, stream: IO[str], first: float = 2.0,
                 every: float = 5.0) -> None:
        self.prof, self.stream, self.first, self.every = prof, stream, first, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tapegrad-progress",
                                        daemon=True)
        self.lines = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            prof = self.prof
            try:
                print(f"[{_PROG}] {prof.wall_seconds:.0f} s: {prof.rows_recorded:,} rows "
                      f"recorded, {prof.backward_calls:,} backward calls", file=self.stream,
                      flush=True)
                self.lines += 1
            except (OSError, ValueError):   # the stream went away
                return
            wait = self.every


# ---------------------------------------------------------------------------------------
# the outputs
# ---------------------------------------------------------------------------------------

def _top_ops(stats: TapeStats, summary: dict[str, Any], top: int) -> str:
    """Ops by backward time (then by rows on the tape), with their share of the tape."""
    backward = summary["backward_ops"]
    names = sorted(set(stats.ops) | set(backward),
                   key=lambda k: (-backward.get(k, {}).get("seconds", 0.0),
                                  -stats.ops.get(k, 0), k))
    head = ("op", "tape rows", "share", "backward rows", "partials", "ns/row")
    lines = []
    for name in names[:top]:
        rows = stats.ops.get(name, 0)
        b = backward.get(name)
        lines.append((
            name, f"{rows:,}", f"{rows / stats.nodes * 100:.1f}%" if stats.nodes else "-",
            f"{b['rows']:,}" if b else "-", _fmt_time(b["seconds"]) if b else "-",
            f"{b['seconds'] / b['rows'] * 1e9:.1f}" if b and b["rows"] else "-",
        ))
    if not lines:
        return "top ops: none (the tape is empty and no backward ran)"
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    more = f" (of {len(names)})" if len(names) > top else ""
    return "\n".join([f"top ops{more}: rows on the tape, backward partials over all calls",
                      fmt(head)] + [fmt(r) for r in lines])


def _write_json(path: str, data: dict[str, Any]) -> None:
    compact = len(data.get("widths", ())) > 10_000
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=None if compact else 2,
                  separators=(",", ":") if compact else None)
        f.write("\n")


def _check_plot(path: str) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in _PLOT_FORMATS:
        raise UsageError(f"--plot writes {', '.join(_PLOT_FORMATS)} files, got {path!r}")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed: "
                         "pip install matplotlib (or pip install -e '.[examples]')")


def _plot(path: str, stats: TapeStats, summary: dict[str, Any], title: str) -> None:
    """Level widths, op mix and backward time, side by side (no pyplot state touched)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_w, ax_ops, ax_t = fig.subplots(1, 3, width_ratios=(1.6, 1, 1))
    fig.suptitle(f"tapegrad profile: {title}", fontsize=11)

    widths = np.asarray(stats.widths, dtype=np.int64)
    if widths.size:
        levels = np.arange(widths.size)
        if widths.size > 4000:           # bin deep tapes: max and mean width per bin
            size = -(-widths.size // 2000)
            pad = np.zeros(-widths.size % size, np.int64)
            binned = np.concatenate((widths, pad)).reshape(-1, size)
            x = levels[::size]
            ax_w.step(x, binned.max(axis=1), where="post", lw=1, label="max in bin")
            ax_w.step(x, np.maximum(binned.mean(axis=1), 1), where="post", lw=1, alpha=0.7,
                      label="mean in bin")
            ax_w.legend(loc="upper right", fontsize=8, title=f"{size:,} levels per bin",
                        title_fontsize=8)
        else:
            ax_w.step(levels, widths, where="mid", lw=1)
            ax_w.fill_between(levels, widths, step="mid", alpha=0.3)
        ax_w.set_yscale("log")
        ax_w.set_xlim(0, max(widths.size - 1, 1))
    else:
        ax_w.text(0.5, 0.5, "empty tape", ha="center", va="center", transform=ax_w.transAxes)
    ax_w.set_xlabel("level (0: leaves)")
    ax_w.set_ylabel("rows at the level")
    ax_w.set_title(f"level widths: {stats.depth:,} levels, widest {stats.max_width:,}, "
                   f"median {stats.median_width:g}", fontsize=10)

    ops = sorted(stats.ops.items(), key=lambda kv: kv[1])
    if ops:
        names, counts = zip(*ops)
        bars = ax_ops.barh(names, counts, color="tab:green")
        ax_ops.bar_label(bars, labels=[f"{c / stats.nodes:.1%}" for c in counts], fontsize=8,
                         padding=2)
        ax_ops.set_xlim(0, max(counts) * 1.25)
    ax_ops.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax_ops.set_xlabel("rows on the tape")
    ax_ops.set_title(f"op mix: {stats.nodes:,} rows", fontsize=10)

    phases = summary["backward_phases"]
    ops_time = summary["backward_ops"]
    if summary["backward_calls"]:
        labels = list(phases) + [f"partials: {k}" for k in ops_time]
        values = [v * 1e3 for v in phases.values()] + [v["seconds"] * 1e3
                                                       for v in ops_time.values()]
        colors = ["tab:blue"] * len(phases) + ["tab:orange"] * len(ops_time)
        y = np.arange(len(labels))[::-1]
        ax_t.barh(y, values, color=colors)
        ax_t.set_yticks(y, labels)
        ax_t.set_title(f"backward: {summary['backward_calls']:,} calls, "
                       f"{_fmt_time(summary['backward_seconds'])} "
                       f"(record {_fmt_time(summary['record_seconds'])})", fontsize=10)
    else:
        ax_t.text(0.5, 0.5, "no backward calls", ha="center", va="center",
                  transform=ax_t.transAxes)
        ax_t.set_title("backward", fontsize=10)
    ax_t.set_xlabel("milliseconds (all calls)")
    fig.savefig(path, dpi=100)


def _check_dot(path: str) -> None:
    try:
        from . import viz
    except ImportError as err:
        raise UsageError(f"--dot needs tapegrad.viz, which failed to import: {err}") from None
    missing = [n for n in ("draw_dot", "save_dot", "GraphTooLargeError", "SAVE_FORMATS")
               if not hasattr(viz, n)]
    if missing:
        raise UsageError(f"--dot needs tapegrad.viz.{', '.join(missing)}, which this version "
                         "of tapegrad.viz does not have")
    suffix = Path(path).suffix.lower()
    fmt = viz.SAVE_FORMATS.get(suffix)
    if fmt is None:
        raise UsageError(f"--dot writes {', '.join(viz.SAVE_FORMATS)} files, got {path!r}")
    if importlib.util.find_spec("pydot") is None:
        raise UsageError("--dot needs pydot, which is not installed: pip install pydot "
                         "(or pip install -e '.[viz]')")
    if fmt != "dot" and shutil.which("dot") is None:
        raise UsageError(f"--dot {path!r} renders with Graphviz's 'dot' program, which is "
                         "not on PATH; install Graphviz or write a .dot file")


def _write_dot(path: str, tape: Tape, max_nodes: int) -> str:
    """Draw the tape collapsed by levels, else by chains; what was written."""
    from . import viz

    if len(tape) == 0:
        raise ValueError("--dot: the tape is empty, there is nothing to draw")
    for collapse in ("levels", "chains"):
        try:
            graph = viz.draw_dot(tape, collapse=collapse, max_nodes=max_nodes)
        except viz.GraphTooLargeError:
            continue
        viz.save_dot(graph, path)
        return (f"DOT picture to {path} ({len(tape):,} rows collapsed by {collapse} "
                f"into {len(graph.get_nodes()):,} nodes)")
    raise ValueError(f"--dot: the tape ({len(tape):,} rows) has more than --dot-max-nodes="
                     f"{max_nodes:,} nodes even collapsed by levels or chains; raise "
                     "--dot-max-nodes, or stream every row with tapegrad.viz.export_dot")


if __name__ == "__main__":
    raise SystemExit(main())
