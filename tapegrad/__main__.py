"""The ``tapegrad`` command line: ``tapegrad profile [options] SCRIPT [ARGS...]``.

``profile`` runs a Python script as ``__main__`` (like ``python SCRIPT ARGS``), or a
module (``-m MODULE``, like ``python -m MODULE ARGS``), on a fresh reclaiming tape that is
the current tape, inside :class:`tapegrad.profile`, then prints the tape's statistics,
the timing table and the top ops. Options go before the script; everything after it is
the script's (as with ``python -m cProfile``). One of tapegrad's own options after the
script is an error (status 2) that shows the reordered command, unless the script's
arguments start with ``--`` (``tapegrad profile s.py -- --json x`` passes
``['--json', 'x']`` to the script).

Exit status: the script's (0 when it finishes or calls ``sys.exit(0)``; ``n`` for
``sys.exit(n)``; 1 when it raises any exception, after reporting the partial tape; 130 on
Ctrl-C), 2 for a missing script or module, a syntax error, bad options, or a ``--dot``
picture Graphviz did not render within ``--dot-timeout``; 141 when standard output is a
pipe that was closed (``tapegrad profile big.py | head -1``); 1 when an output file could
not be written.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import runpy
import shlex
import shutil
import subprocess
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
from .profiler import OUTSIDE, SORT_KEYS, fmt_time, output_path, plural, profile
from .tape import Tape

__all__ = ["main"]

_PROG = "tapegrad profile"
_PLOT_FORMATS = (".png", ".svg", ".pdf")
_DOT_MAX_NODES = 2000
_DOT_TIMEOUT = 60.0
SCHEMA_VERSION = 1
"""Version of the ``--json`` layout (docs/profiling.md); raised when keys change meaning."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141

# tapegrad profile's options: whether each takes a value (to split argv at SCRIPT)
_OPTIONS = {"--json": True, "--plot": True, "--dot": True, "--dot-max-nodes": True,
            "--dot-timeout": True, "--trace": True, "--top": True, "--sort": True,
            "--no-progress": False, "--help": False}
# options that, after SCRIPT, are taken for tapegrad's (--help goes to the script)
_MISPLACED = tuple(k for k in _OPTIONS if k != "--help")

_EPILOG = """\
tapegrad's options go before SCRIPT (or -m MODULE); everything after it is the script's
sys.argv[1:]. An option of tapegrad's after SCRIPT is an error that shows the reordered
command: write 'tapegrad profile --json out.json plain.py', not
'tapegrad profile plain.py --json out.json'. To pass such an option to the script
itself, start the script's arguments with --: 'tapegrad profile plain.py -- --json x'
runs plain.py with sys.argv[1:] == ['--json', 'x'] (that first -- is not passed on; a
later -- is passed on, and nothing after it is checked).

Output paths are relative to the directory tapegrad was started in, even if the
script changes directory.

exit status: the script's (0 done, n for sys.exit(n), 1 when it raises, 130 on Ctrl-C);
2 bad usage, missing script or module, syntax error, or --dot timed out; 141 when stdout
is a closed pipe (| head); 1 when an output could not be written."""


class UsageError(Exception):
    """Bad input found before the script runs: reported in one line, exit status 2."""


class DotTimeoutError(RuntimeError):
    """Graphviz's ``dot`` did not finish within ``--dot-timeout`` seconds."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = _parser()
    try:
        args = _parse(argv, parser, sub)
    except SystemExit as exit:           # --help, --version, usage errors
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    except UsageError as err:
        _say(f"{_PROG}: error: {err}")
        return EXIT_USAGE
    try:
        return _profile_command(args)
    except UsageError as err:
        _say(f"{_PROG}: error: {err}")
        return EXIT_USAGE


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="tapegrad", description="tapegrad tools. Commands: profile.")
    parser.add_argument("--version", action="version", version=f"tapegrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "profile", help="run a script and report its tape and where the time went",
        description="Run SCRIPT (or -m MODULE) as __main__ on a fresh reclaiming tape inside\n"
                    "tapegrad.profile(), then print the tape's statistics, the timing table\n"
                    "and the top ops.",
        usage="tapegrad profile [options] (SCRIPT | -m MODULE) [ARGS...]",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("script", metavar="SCRIPT", nargs="?", help="the Python script to run")
    script_args = p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                                 help="arguments for the script (its sys.argv[1:])")
    script_args.required = False        # argparse would list it as required when SCRIPT is missing
    p.add_argument("-m", dest="module", metavar="MODULE",
                   help="run a module as __main__, like python -m (instead of SCRIPT)")
    p.add_argument("--json", metavar="PATH", help="write the statistics and timings as JSON")
    p.add_argument("--plot", metavar="PATH",
                   help="write a picture of the level widths, the op mix and the backward "
                        "time (.png, .svg or .pdf; needs matplotlib)")
    p.add_argument("--dot", metavar="PATH",
                   help="write a collapsed picture of the tape (.dot/.gv text, or "
                        ".svg/.png/.pdf with Graphviz; needs pydot)")
    p.add_argument("--dot-max-nodes", type=_positive, default=_DOT_MAX_NODES, metavar="N",
                   help=f"largest collapsed picture --dot draws (default {_DOT_MAX_NODES})")
    p.add_argument("--dot-timeout", type=_positive_seconds, default=_DOT_TIMEOUT,
                   metavar="SECONDS",
                   help=f"give up rendering --dot .svg/.png/.pdf after SECONDS "
                        f"(default {_DOT_TIMEOUT:g}; exit status 2)")
    p.add_argument("--trace", metavar="PATH",
                   help="write a Chrome trace (open in https://ui.perfetto.dev)")
    p.add_argument("--top", type=_positive, default=10, metavar="N",
                   help="ops listed under 'top ops' (default 10)")
    p.add_argument("--sort", choices=SORT_KEYS, metavar="KEY",
                   help="order the rows of the timing table among their siblings by a "
                        "column: total (or time), self, calls, avg, rows, ns-per-row "
                        "(largest first) or name; also orders 'top ops' (time, rows, "
                        "ns-per-row, name). Default: phases in the order they run, ops "
                        "slowest first")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not print progress to stderr during long runs")
    return parser, p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}") \
            from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}")
    return value


# ---------------------------------------------------------------------------------------
# splitting the command line at SCRIPT
# ---------------------------------------------------------------------------------------

def _parse(argv: list[str], parser: argparse.ArgumentParser,
           sub: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse ``argv``; for ``profile``, tapegrad's options end at SCRIPT or -m MODULE."""
    if argv[:1] != ["profile"]:
        return parser.parse_args(argv)       # --version, --help, unknown commands
    opts, kind, target, rest = _split(argv[1:])
    if kind is None:
        args = parser.parse_args(argv[:1] + opts)     # --help, or errors in the options
        sub.error("the following arguments are required: SCRIPT")   # or -m MODULE
    if kind == "module":
        args = parser.parse_args(["profile", *opts, "-m", target])
    else:
        args = parser.parse_args(["profile", *opts, *(["--"] if target.startswith("-") else []),
                                  target])
    args.separated = rest[:1] == ["--"]      # the script's arguments after a literal --
    if args.separated:
        args.args = rest[1:]
    else:
        _check_misplaced(opts, kind, target, rest)
        args.args = rest
    return args


def _split(tokens: list[str]) -> tuple[list[str], str | None, str, list[str]]:
    """(tapegrad's options, "script"/"module"/None, the script or module, the rest)."""
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "--":
            if i + 1 < len(tokens):
                return tokens[:i], "script", tokens[i + 1], tokens[i + 2:]
            return tokens[:i], None, "", []
        if t == "-m":
            if i + 1 >= len(tokens):
                raise UsageError("argument -m: expected a module name")
            return tokens[:i], "module", tokens[i + 1], tokens[i + 2:]
        if t.startswith("-m") and not t.startswith("--"):
            return tokens[:i], "module", t[2:], tokens[i + 1:]
        if not t.startswith("-") or t == "-":
            return tokens[:i], "script", t, tokens[i + 1:]
        i += 2 if "=" not in t and _takes_value(t) else 1
    return tokens, None, "", []


def _takes_value(option: str) -> bool:
    """Whether ``option`` (or the one option it abbreviates) takes a value."""
    if option in _OPTIONS:
        return _OPTIONS[option]
    matches = [k for k in _OPTIONS if option.startswith("--") and k.startswith(option)]
    return len(matches) == 1 and _OPTIONS[matches[0]]


def _check_misplaced(opts: list[str], kind: str, target: str, rest: list[str]) -> None:
    """Reject tapegrad's options after SCRIPT, naming the command that was meant."""
    moved, kept, i = [], [], 0
    while i < len(rest):
        t = rest[i]
        name = t.split("=", 1)[0]
        if t == "--":                  # the script's own end of options: the rest is its
            kept += rest[i:]
            break
        if name in _MISPLACED:
            take = 2 if "=" not in t and _OPTIONS[name] and i + 1 < len(rest) else 1
            moved += rest[i:i + take]
            i += take
        else:
            kept.append(t)
            i += 1
    if not moved:
        return
    names = [t.split("=", 1)[0] for t in moved if t.split("=", 1)[0] in _MISPLACED]
    head = ["-m", target] if kind == "module" else [target]
    meant = shlex.join(["tapegrad", "profile", *opts, *moved, *head, *kept])
    literal = shlex.join(["tapegrad", "profile", *opts, *head, "--", *rest])
    which = ", ".join(dict.fromkeys(names))
    raise UsageError(
        f"{which} after {'-m ' + target if kind == 'module' else target} would be passed to "
        f"the script, not used by tapegrad; tapegrad's options go before "
        f"{'-m MODULE' if kind == 'module' else 'SCRIPT'}:\n  {meant}\n"
        f"(to pass {which} to the script itself, put -- before its arguments: {literal})")


# ---------------------------------------------------------------------------------------
# the profile command
# ---------------------------------------------------------------------------------------

class _Target:
    """The script or module to run: its name, file (for tracebacks) and how it runs."""

    def __init__(self, kind: str, name: str, file: str) -> None:
        self.kind, self.name, self.file = kind, name, file

    @classmethod
    def script(cls, path: str) -> _Target:
        """A script, checked for existence and syntax (exit 2 otherwise)."""
        p = Path(path)
        if not p.exists():
            raise UsageError(f"no such script: {path!r}")
        if not p.is_file():
            raise UsageError(f"not a file: {path!r}")
        try:
            compile(p.read_bytes(), path, "exec")
        except SyntaxError as err:
            where = f"line {err.lineno}" if err.lineno else "?"
            raise UsageError(f"{type(err).__name__} in {path!r} at {where}: {err.msg}") \
                from None
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read {path!r}: {err}") from None
        return cls("script", path, os.path.abspath(path))

    @classmethod
    def module(cls, name: str) -> _Target:
        """A module (or a package with ``__main__``) that ``python -m`` could run."""
        if not name or name.startswith("."):
            raise UsageError(f"-m needs an absolute module name, got {name!r}")
        saved = sys.path[:]
        sys.path.insert(0, os.getcwd())          # where python -m looks first
        try:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(name + ".__main__")
                if spec is None:
                    raise UsageError(f"{name!r} is a package without a __main__ module; "
                                     "it cannot be run with -m")
            if spec is None:
                raise UsageError(f"no module named {name!r}")
            code = spec.loader.get_code(spec.name) if hasattr(spec.loader, "get_code") \
                else None
        except SyntaxError as err:
            where = f"line {err.lineno}" if err.lineno else "?"
            raise UsageError(f"{type(err).__name__} in module {name!r} at {where}: "
                             f"{err.msg}") from None
        except UsageError:
            raise
        except Exception as err:      # a parent package that fails to import, and the like
            raise UsageError(f"cannot find module {name!r}: {type(err).__name__}: {err}") \
                from None
        finally:
            sys.path[:] = saved
        if code is None and not spec.origin:
            raise UsageError(f"module {name!r} has no code to run")
        return cls("module", name, os.path.abspath(spec.origin or name))


def _profile_command(args: argparse.Namespace) -> int:
    target = _Target.module(args.module) if args.module else _Target.script(args.script)
    outputs: dict[str, tuple[str, Path]] = {}   # option -> (as given, absolute path)
    for option in ("json", "trace", "plot", "dot"):
        path = getattr(args, option)
        if path is not None:
            try:
                output_path(path, f"--{option}")
            except OSError as err:
                raise UsageError(str(err)) from None
            outputs[option] = (path, Path(os.path.abspath(path)))
    if args.plot is not None:
        _check_plot(args.plot)
    if args.dot is not None:
        _check_dot(args.dot)

    separator = ["--"] if getattr(args, "separated", False) else []
    command = shlex.join([*(["-m"] if target.kind == "module" else []), target.name,
                          *separator, *args.args])
    cwd = os.getcwd()
    out, err = sys.stdout, sys.stderr           # the report goes to these, whatever the script does
    out_fd = _fileno(out)
    tape = Tape("profile", reclaim=True)
    prof = profile()
    progress = _Progress(prof, err) if args.progress else None
    with prof:
        tape.__enter__()
        try:
            if progress is not None:
                progress.start()
            status, code = _run_target(target, args.args, out, err)
        finally:
            if progress is not None:
                progress.stop()
            _leave(tape)
    sys.stdout, sys.stderr = out, err
    try:
        os.chdir(cwd)                 # a script that changed directory: back to where we were
    except OSError:
        pass
    stream, note = _report_stream(out, out_fd, err)
    report = _Report(stream)
    if status == "broken_pipe":
        report.silence()
    elif note:
        _say(f"{_PROG}: {note}", err)

    t0 = perf_counter()
    stats = tape.stats()
    stats_seconds = perf_counter() - t0
    summary = prof.to_dict()
    verb = {"ok": "finished", "error": "raised", "exit": "exited",
            "interrupted": "was interrupted", "broken_pipe": "lost its stdout"}[status]
    report.print(f"\n== {_PROG}: {command} {verb} after {fmt_time(prof.wall_seconds)} "
                 f"(exit status {code}) ==")
    report.print(f"\ntape {tape.name!r} at the end (a reclaiming tape keeps live rows and "
                 f"rows not reclaimed yet):")
    report.print(describe_stats(stats))
    report.print(f"rows recorded during the run: {prof.rows_recorded:,} (all tapes and "
                 f"threads, rows since reset or reclaimed included); stats() took "
                 f"{fmt_time(stats_seconds)}")
    report.print("\n" + prof.report(sort=args.sort))
    report.print("\n" + _top_ops(stats, summary, args.top, args.sort))
    report.flush()

    data = {"schema_version": SCHEMA_VERSION, "tapegrad_version": __version__,
            "script": target.name if target.kind == "script" else None,
            "module": target.name if target.kind == "module" else None,
            "args": list(args.args), "status": status, "exit_code": code,
            "tape": tape.name, "stats_seconds": stats_seconds,
            **stats.to_dict(), **summary}
    written = []

    def shown(option: str) -> str:
        return outputs[option][0]

    try:
        if args.json is not None:
            _write_json(outputs["json"][1], data)
            written.append(f"JSON to {shown('json')}")
        if args.trace is not None:
            prof.export_chrome_trace(outputs["trace"][1])
            written.append(f"trace to {shown('trace')}")
        if args.plot is not None:
            _plot(outputs["plot"][1], stats, summary, command)
            written.append(f"plot to {shown('plot')}")
        if written:
            report.print("wrote " + "; ".join(written))
            report.flush()
        if args.dot is not None:
            report.print("wrote " + _write_dot(outputs["dot"][1], shown("dot"), tape,
                                               args.dot_max_nodes, args.dot_timeout, err))
    except DotTimeoutError as error:
        report.flush()
        _say(f"{_PROG}: error: {error}", err)
        return code or EXIT_USAGE
    except Exception as error:   # an output that could not be written: say which, fail
        if written:
            report.print("wrote " + "; ".join(written))
        report.flush()
        _say(f"{_PROG}: error: {error}", err)
        return code or EXIT_ERROR
    finally:
        report.close()
    if report.broken:
        return code or EXIT_BROKEN_PIPE
    return code


def _run_target(target: _Target, script_args: list[str], out: IO[str],
                err: IO[str]) -> tuple[str, int]:
    """Run the script or module as ``__main__``; (status, exit code). Prints the script's
    traceback (from its first frame on) when it raises."""
    saved_argv, saved_path = sys.argv, sys.path[:]
    try:
        if target.kind == "module":
            sys.argv = [target.file, *script_args]   # run_module sets argv[0] to the file
            sys.path.insert(0, os.getcwd())
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target.name, *script_args]
            sys.path.insert(0, os.path.dirname(target.file))
            runpy.run_path(target.name, run_name="__main__")
        return "ok", EXIT_OK
    except SystemExit as exit:
        code = exit.code
        if code is None or code == 0:
            return "ok", EXIT_OK
        if isinstance(code, int):
            return "exit", code
        _flush(out)
        _say(str(code), err)            # what Python prints for sys.exit("message")
        return "exit", EXIT_ERROR
    except KeyboardInterrupt:
        _flush(out)
        _say(f"{_PROG}: interrupted; reporting the partial tape", err)
        return "interrupted", EXIT_INTERRUPTED
    except BaseException as error:     # Exception, and BaseException subclasses of its own
        if isinstance(error, BrokenPipeError) and _pipe_broken(out):
            return "broken_pipe", EXIT_BROKEN_PIPE
        _flush(out)
        _say(_script_traceback(error, target), err, end="")
        _say(f"{_PROG}: the script raised {type(error).__name__}; reporting the partial "
             "tape", err)
        return "error", EXIT_ERROR
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _script_traceback(err: BaseException, target: _Target) -> str:
    """The traceback of ``err`` from the script's first frame on (no runpy frames)."""
    names = {target.file, target.name}      # a relative name stays relative after chdir()
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename not in names:
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
            _say(f"{_PROG}: warning: the script left tapes entered ({names}); "
                 "leaving them")
            for entered in reversed(stack[k:]):
                entered.__exit__(None, None, None)
            return


# ---------------------------------------------------------------------------------------
# where the report goes: closed streams and broken pipes
# ---------------------------------------------------------------------------------------

def _say(text: str, stream: IO[str] | None = None, end: str = "\n") -> None:
    """Print to stderr (``stream``), or to the process's stderr if that one is gone."""
    for s in (stream if stream is not None else sys.stderr, sys.__stderr__):
        if s is None or getattr(s, "closed", False):
            continue
        try:
            print(text, end=end, file=s, flush=True)
            return
        except (OSError, ValueError):
            continue


def _flush(stream: IO[str]) -> None:
    try:
        stream.flush()
    except (OSError, ValueError):
        pass


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _pipe_broken(stream: IO[str]) -> bool:
    """Whether ``stream`` writes to a pipe whose reader has gone away."""
    try:
        stream.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    fd = _fileno(stream)
    if fd is None:
        return False
    try:
        import select

        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _report_stream(out: IO[str], out_fd: int | None,
                   err: IO[str]) -> tuple[IO[str], str | None]:
    """The stream for the report: the stdout tapegrad started with, else (the script
    closed it) its file descriptor reopened, else stderr; and a note saying so."""
    if not getattr(out, "closed", False):
        return out, None
    if out_fd is not None:
        try:
            os.fstat(out_fd)
            stream = open(os.dup(out_fd), "w", encoding=getattr(out, "encoding", None)
                          or "utf-8", errors="backslashreplace")
            return stream, ("the script closed sys.stdout; writing the report to the "
                            f"original standard output (file descriptor {out_fd})")
        except OSError:
            pass
    for s in (err, sys.__stderr__):
        if s is not None and not getattr(s, "closed", False):
            return s, "the script closed sys.stdout; writing the report to stderr"
    return open(os.devnull, "w"), None


class _Report:
    """Prints the report to ``stream``; on a broken pipe, stops quietly (stdout is sent
    to devnull, as the Python docs advise for SIGPIPE) and remembers it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.broken = False

    def print(self, text: str) -> None:
        if not self.broken:
            try:
                print(text, file=self.stream)
            except BrokenPipeError:
                self.silence()

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.silence()

    def silence(self) -> None:
        """Write nothing more, and point the stream's descriptor at devnull so that
        Python's flush at exit does not fail either."""
        self.broken = True
        fd = _fileno(self.stream)
        if fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)

    def close(self) -> None:
        """Close the stream if it is one this module opened (not stdout or stderr)."""
        self.flush()
        if self.stream not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                self.stream.close()
            except OSError:
                pass


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
                print(f"[{_PROG}] {prof.wall_seconds:.0f} s: "
                      f"{plural(prof.rows_recorded, 'row')} recorded, "
                      f"{plural(prof.backward_calls, 'backward call')}", file=self.stream,
                      flush=True)
                self.lines += 1
            except (OSError, ValueError):   # the stream went away
                return
            wait = self.every


# ---------------------------------------------------------------------------------------
# the outputs
# ---------------------------------------------------------------------------------------

def describe_stats(stats: TapeStats) -> str:
    """``str(stats)`` with singulars where they belong and no empty ``ops:`` line."""
    if stats.nodes == 0:
        return "0 rows: the tape is empty"
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.ops.items(), key=lambda kv: -kv[1]))
    lines = [
        f"{plural(stats.nodes, 'row')} ({plural(stats.leaves, 'leaf', 'leaves')}), "
        f"{plural(stats.depth, 'level')} (widest {stats.max_width:,}, median "
        f"{stats.median_width:g}), max fan-out {stats.max_fanout:,}, longest "
        f"single-consumer chain {stats.longest_chain:,}",
    ]
    if mix:
        lines.append(f"ops: {mix}")
    lines.append(f"memory: {plural(stats.total_nbytes, 'byte')} "
                 f"({stats.bytes_per_node:.1f} per row)")
    return "\n".join(lines)


_TOP_SORT = {"rows": lambda s, b, k: (-s.ops.get(k, 0), k),
             "name": lambda s, b, k: (k,),
             "ns-per-row": lambda s, b, k: (-(b[k]["seconds"] / b[k]["rows"])
                                            if k in b and b[k]["rows"] else 0.0, k)}


def _top_ops(stats: TapeStats, summary: dict[str, Any], top: int,
             sort: str | None = None) -> str:
    """Ops by backward time (then by rows on the tape), with their share of the tape;
    ``sort`` rows, name or ns-per-row orders them by that column instead."""
    backward = summary["backward_ops"]
    key = _TOP_SORT.get(sort or "")
    names = sorted(set(stats.ops) | set(backward),
                   key=(lambda k: key(stats, backward, k)) if key else
                   (lambda k: (-backward.get(k, {}).get("seconds", 0.0),
                               -stats.ops.get(k, 0), k)))
    head = ("op", "tape rows", "share", "backward rows", "partials", "ns/row")
    lines = []
    for name in names[:top]:
        rows = stats.ops.get(name, 0)
        b = backward.get(name)
        lines.append((
            name, f"{rows:,}", f"{rows / stats.nodes * 100:.1f}%" if stats.nodes else "-",
            f"{b['rows']:,}" if b else "-", fmt_time(b["seconds"]) if b else "-",
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


def _write_json(path: str | Path, data: dict[str, Any]) -> None:
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
                         'pip install matplotlib (or pip install "tapegrad[examples]")')


def _plot(path: str | Path, stats: TapeStats, summary: dict[str, Any], title: str) -> None:
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
            ax_w.legend(loc="upper right", fontsize=8, title=f"{plural(size, 'level')} per bin",
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
    ax_w.set_title(f"level widths: {plural(stats.depth, 'level')}, widest {stats.max_width:,}, "
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
    ax_ops.set_title(f"op mix: {plural(stats.nodes, 'row')}", fontsize=10)

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
        ax_t.set_title(f"backward: {plural(summary['backward_calls'], 'call')}, "
                       f"{fmt_time(summary['backward_seconds'])} "
                       f"({OUTSIDE}: {fmt_time(summary['outside_seconds'])})", fontsize=10)
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
                         '(or pip install "tapegrad[viz]")')
    if fmt != "dot" and shutil.which("dot") is None:
        raise UsageError(f"--dot {path!r} renders with Graphviz's 'dot' program, which is "
                         "not on PATH; install Graphviz or write a .dot file")


def _write_dot(path: Path, shown: str, tape: Tape, max_nodes: int, timeout: float,
               err: IO[str]) -> str:
    """Draw the tape collapsed by levels, else by chains, and write it (rendering with
    Graphviz for .svg/.png/.pdf, within ``timeout`` seconds); what was written."""
    from . import viz

    if len(tape) == 0:
        raise ValueError("--dot: the tape is empty, there is nothing to draw")
    for collapse in ("levels", "chains"):
        try:
            graph = viz.draw_dot(tape, collapse=collapse, max_nodes=max_nodes)
        except viz.GraphTooLargeError:
            continue
        nodes = len(graph.get_nodes())
        fmt = viz.SAVE_FORMATS[path.suffix.lower()]
        if fmt == "dot":
            viz.save_dot(graph, path)
        else:
            _say(f"{_PROG}: rendering {shown} ({plural(nodes, 'node')}) with Graphviz, "
                 f"giving up after {timeout:g} s (--dot-timeout) ...", err)
            _render_dot(viz, graph, path, fmt, shown, timeout)
        return (f"DOT picture to {shown} ({plural(len(tape), 'row')} collapsed by "
                f"{collapse} into {plural(nodes, 'node')})")
    raise ValueError(f"--dot: the tape ({plural(len(tape), 'row')}) has more than "
                     f"--dot-max-nodes={max_nodes:,} nodes even collapsed by levels or "
                     "chains; raise --dot-max-nodes, or stream every row with "
                     "tapegrad.viz.export_dot")


def _render_dot(viz: Any, graph: Any, path: Path, fmt: str, shown: str,
                timeout: float) -> None:
    """Render with ``viz.save_dot(..., timeout=)`` when tapegrad.viz has it, else run
    Graphviz's ``dot`` here; a timeout raises :class:`DotTimeoutError` with advice."""
    advice = (f"Graphviz's dot did not finish rendering {shown} within {timeout:g} s "
              "(--dot-timeout); write a .dot file instead (--dot tape.dot, no Graphviz "
              "needed), lower --dot-max-nodes, or raise --dot-timeout")
    if "timeout" in inspect.signature(viz.save_dot).parameters:
        timeout_error = getattr(viz, "GraphvizTimeoutError", None)
        try:
            viz.save_dot(graph, path, timeout=timeout)
        except Exception as error:
            if timeout_error is not None and isinstance(error, timeout_error):
                raise DotTimeoutError(str(error)) from None     # its message gives advice
            raise
        return
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(f"--dot {shown}: Graphviz's 'dot' program is no longer on PATH")
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=graph.to_string().encode("utf-8"),
                              capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DotTimeoutError(advice) from None
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz's dot failed (exit status {proc.returncode}) rendering "
                           f"{shown}: {proc.stderr.decode(errors='replace').strip()}")
    path.write_bytes(proc.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
