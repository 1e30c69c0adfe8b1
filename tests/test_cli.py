"""``tapegrad profile``: outputs after os.chdir, BaseException, closed stdout, broken pipes,
--dot rendering with a timeout, options after SCRIPT, -m MODULE, --sort, the JSON header
and singular words. Timings are never compared; counts and messages are exact."""

from __future__ import annotations

import inspect
import json
import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tapegrad
from tapegrad import Tape
from tapegrad import tape as tape_module
from tapegrad.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

CHAIN = """\
import sys
from tapegrad import Value
x = Value(1.0)
for _ in range(9):
    x = x * 2
x.backward()
print("argv", sys.argv[1:])
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def run(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tapegrad", "profile", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env, **kw)


@pytest.fixture(autouse=True)
def clean_state():
    cwd, main_module = os.getcwd(), sys.modules["__main__"]
    yield
    assert tape_module.probes() == () and tape_module.entered_tapes() == ()
    assert os.getcwd() == cwd and sys.modules["__main__"] is main_module


# ---------------------------------------------------------------------------------------
# 1. rows recorded: every tape, not the profile tape's 337 rows
# ---------------------------------------------------------------------------------------

def test_moons_replay_reports_every_row_recorded(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    created: list[Tape] = []
    init = Tape.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(Tape, "__init__", spy)
    out = tmp_path / "moons.json"
    code = main(["profile", "--no-progress", "--json", str(out), str(ROOT / "examples/moons.py"),
                 "--replay", "--steps", "3", "--out", str(tmp_path / "moons.png")])
    assert code == 0
    data = json.loads(out.read_text())
    # the truth: every tape the run created still holds all it recorded (none reclaims
    # below 2^20 rows), the profile tape its 337 parameters
    by_name = {t.name: len(t) for t in created}
    assert by_name["profile"] == data["nodes"] == 337
    truth = sum(len(t) for t in created)
    assert truth > 60_000 and data["rows_recorded"] == truth
    stdout = capsys.readouterr().out
    assert f"rows recorded during the run: {truth:,} (all tapes and threads" in stdout
    [outside] = [line for line in stdout.splitlines() if line.startswith("outside ")]
    assert outside.split()[:3] == ["outside", "backward/replay", "1"]
    assert outside.split()[-2:] == [f"{truth:,}", "-"]          # rows recorded, no rate


# ---------------------------------------------------------------------------------------
# 3. output paths are resolved before the script changes directory
# ---------------------------------------------------------------------------------------

def test_outputs_are_relative_to_the_start_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path, "wander.py", """\
        import os
        from tapegrad import Value
        os.chdir("elsewhere")
        (Value(2.0) * 3).backward()
        print("now in", os.path.basename(os.getcwd()))
    """)
    monkeypatch.chdir(tmp_path)
    argv = ["profile", "--json", "out.json", "--trace", "trace.json"]
    pydot = _has("pydot")
    if pydot:
        argv += ["--dot", "tape.dot"]
    assert main([*argv, "wander.py"]) == 0
    stdout = capsys.readouterr().out
    assert "now in elsewhere" in stdout
    assert os.getcwd() == str(tmp_path)          # tapegrad went back where it started
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == []
    assert json.loads((tmp_path / "out.json").read_text())["rows_recorded"] == 2
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert "wrote JSON to out.json; trace to trace.json\n" in stdout
    if pydot:
        assert (tmp_path / "tape.dot").read_text().lstrip().startswith(("digraph", "strict"))


def test_a_script_that_changes_directory_and_raises_keeps_its_traceback(tmp_path, capsys,
                                                                       monkeypatch):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "fails.py", """\
        import os
        os.chdir("sub")

        def broken():
            raise RuntimeError("after chdir")

        broken()
    """)
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "--json", "fail.json", "fails.py"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: after chdir" in err and "in broken" in err and "runpy" not in err
    assert json.loads((tmp_path / "fail.json").read_text())["status"] == "error"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------------------------------
# 4. BaseException, closed stdout, broken pipes
# ---------------------------------------------------------------------------------------

RAISES = """\
from tapegrad import Value
x = Value(2.0)
for _ in range(4):
    x = x * 2
x.backward()
{body}
print("not reached")
"""


@pytest.mark.parametrize("body, code, status, message", [
    ("class Stop(BaseException):\n    pass\nraise Stop('halt')", 1, "error",
     "the script raised Stop; reporting the partial tape"),
    ("raise KeyboardInterrupt", 130, "interrupted", "interrupted; reporting the partial tape"),
    ("raise SystemExit(7)", 7, "exit", None),
    ("import asyncio\nraise asyncio.CancelledError()", 1, "error",
     "the script raised CancelledError; reporting the partial tape"),
])
def test_base_exceptions_still_report_the_partial_tape(tmp_path, capsys, body, code, status,
                                                       message):
    script = write(tmp_path, "stops.py", RAISES.format(body=body))
    out = tmp_path / "stops.json"
    assert main(["profile", "--json", str(out), str(script)]) == code
    captured = capsys.readouterr()
    assert "not reached" not in captured.out
    assert "5 rows (1 leaf), 5 levels" in captured.out
    assert f"(exit status {code}) ==" in captured.out
    if message is not None:
        assert f"tapegrad profile: {message}\n" in captured.err
    if status == "error":
        assert "Traceback (most recent call last)" in captured.err and "stops.py" in captured.err
    data = json.loads(out.read_text())
    assert data["status"] == status and data["exit_code"] == code and data["nodes"] == 5


def test_a_script_closing_stdout_gets_its_report_on_the_original_stdout(tmp_path):
    script = write(tmp_path, "closes.py", """\
        import sys
        from tapegrad import Value
        (Value(1.0) + 2).backward()
        print("before close")
        sys.stdout.close()
    """)
    proc = run("--json", str(tmp_path / "c.json"), str(script))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("tapegrad profile: the script closed sys.stdout; writing the report to the "
            "original standard output (file descriptor 1)\n") in proc.stderr
    assert proc.stdout.startswith("before close\n")
    assert "2 rows (1 leaf), 2 levels" in proc.stdout and "wrote JSON to" in proc.stdout


def test_a_script_closing_stdout_and_its_descriptor_gets_its_report_on_stderr(tmp_path):
    script = write(tmp_path, "closes_fd.py", """\
        import os
        import sys
        from tapegrad import Value
        Value(1.0) + 2
        sys.stdout.close()
        os.close(1)
    """)
    proc = run(str(script))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert ("tapegrad profile: the script closed sys.stdout; writing the report to stderr\n"
            in proc.stderr)
    assert "2 rows (1 leaf), 2 levels" in proc.stderr


def _head_1(script: Path, *options: str) -> tuple[int, str, str]:
    """``tapegrad profile [options] script | head -1``: (status, first line, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "tapegrad", "profile", *options,
                             str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    first = proc.stdout.readline().decode()
    proc.stdout.close()                     # what head does after its line
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), first, err


def test_a_broken_pipe_in_the_script_ends_quietly(tmp_path):
    script = write(tmp_path, "big.py", """\
        from tapegrad import Value
        x = Value(1.0) + 1
        for k in range(10**7):
            print("line", k)
    """)
    out = tmp_path / "big.json"
    status, first, err = _head_1(script, "--json", str(out))
    assert (status, first, err) == (141, "line 0\n", "")
    data = json.loads(out.read_text())
    assert data["status"] == "broken_pipe" and data["exit_code"] == 141
    assert data["rows_recorded"] == 2


def test_a_broken_pipe_while_printing_the_report_ends_quietly(tmp_path):
    # the script waits until its reader is gone, so only the report meets the broken pipe
    script = write(tmp_path, "waits.py", """\
        import select
        import sys
        import time
        from tapegrad import Value
        print("only line", flush=True)
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                event & select.POLLERR for _, event in poll.poll(50)):
            pass
        (Value(1.0) * 3).backward()
    """)
    if not hasattr(select, "poll"):
        pytest.skip("needs select.poll")
    out = tmp_path / "waits.json"
    status, first, err = _head_1(script, "--json", str(out))
    assert (status, first, err) == (141, "only line\n", "")
    data = json.loads(out.read_text())
    assert data["status"] == "ok" and data["backward_calls"] == 1


# ---------------------------------------------------------------------------------------
# 5. --dot: rendered last, announced, with a timeout
# ---------------------------------------------------------------------------------------

def fake_dot(folder: Path, body: str) -> Path:
    """A ``dot`` executable in ``folder`` running the shell ``body``."""
    folder.mkdir(exist_ok=True)
    exe = folder / "dot"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def plain_save_dot(monkeypatch):
    """tapegrad.viz.save_dot as it was before it had ``timeout=``."""
    pytest.importorskip("pydot")
    from tapegrad import viz

    original = viz.save_dot

    def save_dot(graph, path, **options):
        options.pop("timeout", None)
        return original(graph, path, **options)

    monkeypatch.setattr(viz, "save_dot", save_dot)
    assert "timeout" not in inspect.signature(viz.save_dot).parameters


def test_dot_rendering_times_out_with_advice_and_keeps_the_other_outputs(
        tmp_path, capsys, monkeypatch, plain_save_dot):
    fake_dot(tmp_path / "bin", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    script = write(tmp_path, "chain.py", CHAIN)
    svg, js, trace = tmp_path / "tape.svg", tmp_path / "p.json", tmp_path / "t.json"
    code = main(["profile", "--dot", str(svg), "--dot-timeout", "0.2", "--json", str(js),
                 "--trace", str(trace), str(script)])
    assert code == 2
    captured = capsys.readouterr()
    assert f"wrote JSON to {js}; trace to {trace}\n" in captured.out
    assert json.loads(js.read_text())["nodes"] == 10 and trace.exists() and not svg.exists()
    assert (f"tapegrad profile: rendering {svg} (" in captured.err
            and "with Graphviz, giving up after 0.2 s (--dot-timeout) ...\n" in captured.err)
    assert (f"tapegrad profile: error: Graphviz's dot did not finish rendering {svg} within "
            "0.2 s (--dot-timeout); write a .dot file instead (--dot tape.dot, no Graphviz "
            "needed), lower --dot-max-nodes, or raise --dot-timeout\n") in captured.err
    assert captured.err.index("rendering") < captured.err.index("did not finish")


def test_dot_rendering_with_a_quick_graphviz(tmp_path, capsys, monkeypatch, plain_save_dot):
    fake_dot(tmp_path / "bin", "cat > /dev/null\nprintf '<svg>fake</svg>'")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    script = write(tmp_path, "chain.py", CHAIN)
    svg = tmp_path / "tape.svg"
    assert main(["profile", "--dot", str(svg), str(script)]) == 0
    assert svg.read_text() == "<svg>fake</svg>"
    captured = capsys.readouterr()
    assert f"wrote DOT picture to {svg} (10 rows collapsed by levels into " in captured.out
    assert "rendering" in captured.err


def test_dot_uses_save_dots_timeout_when_viz_has_it(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pydot")
    from tapegrad import viz

    class FakeTimeout(viz.GraphvizError):
        pass

    calls = []

    def save_dot(graph, path, *, timeout=None):
        # the other outputs are written and reported before rendering starts
        calls.append((Path(path), timeout, capsys.readouterr()))
        raise FakeTimeout("dot took longer than 1.5 s; write .dot instead or lower the cap")

    fake_dot(tmp_path / "bin", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(viz, "GraphvizTimeoutError", FakeTimeout, raising=False)
    monkeypatch.setattr(viz, "save_dot", save_dot)
    script = write(tmp_path, "chain.py", CHAIN)
    svg, js = tmp_path / "tape.svg", tmp_path / "p.json"
    code = main(["profile", "--dot-timeout", "1.5", "--json", str(js), "--dot", str(svg),
                 str(script)])
    assert code == 2
    [(path, timeout, before)] = calls
    assert path == svg and timeout == 1.5
    assert before.out.endswith(f"wrote JSON to {js}\n") and js.exists()
    assert before.err.endswith("giving up after 1.5 s (--dot-timeout) ...\n")
    assert capsys.readouterr().err == ("tapegrad profile: error: dot took longer than 1.5 s; "
                                       "write .dot instead or lower the cap\n")


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_dot_timeout_must_be_positive_seconds(value, capsys):
    assert main(["profile", "--dot-timeout", value, "x.py"]) == 2
    assert "argument --dot-timeout: expected seconds (a number > 0)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# 6. tapegrad's options after SCRIPT
# ---------------------------------------------------------------------------------------

PLAIN = """\
import sys
open(sys.argv[0] + ".ran", "w").write(repr(sys.argv[1:]))
"""


def test_options_after_the_script_are_an_error_showing_the_reordered_command(tmp_path,
                                                                            capsys):
    script = write(tmp_path, "plain.py", PLAIN)
    out = tmp_path / "out.json"
    assert main(["profile", str(script), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tapegrad profile: error: --json after {script} would be passed to the script, not "
        "used by tapegrad; tapegrad's options go before SCRIPT:\n"
        f"  tapegrad profile --json {out} {script}\n"
        f"(to pass --json to the script itself, put -- before its arguments: "
        f"tapegrad profile {script} -- --json {out})\n")
    assert not out.exists() and not Path(f"{script}.ran").exists()


def test_misplaced_options_keep_the_others_in_place(tmp_path, capsys):
    script = write(tmp_path, "plain.py", PLAIN)
    assert main(["profile", "--top", "3", str(script), "a", "--trace=t.json", "--no-progress",
                 "b", "--sort", "rows"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tapegrad profile: error: --trace, --no-progress, --sort after "
                          f"{script} would be passed to the script")
    assert (f"\n  tapegrad profile --top 3 --trace=t.json --no-progress --sort rows {script} "
            "a b\n") in err


def test_arguments_after_a_double_dash_go_to_the_script_verbatim(tmp_path, capsys):
    script = write(tmp_path, "plain.py", PLAIN)
    assert main(["profile", "--no-progress", str(script), "--", "--json", "out.json",
                 "--", "-h"]) == 0
    assert Path(f"{script}.ran").read_text() == repr(["--json", "out.json", "--", "-h"])
    assert f"== tapegrad profile: {script} -- --json out.json -- -h finished" in \
        capsys.readouterr().out


def test_the_scripts_own_help_and_unknown_options_pass_through(tmp_path, capsys):
    script = write(tmp_path, "plain.py", PLAIN)
    assert main(["profile", str(script), "--help", "-m", "x", "--jsonl", "y"]) == 0
    assert Path(f"{script}.ran").read_text() == repr(["--help", "-m", "x", "--jsonl", "y"])


def test_moons_with_json_after_the_script_names_the_fix(capsys):
    moons = str(ROOT / "examples/moons.py")
    assert main(["profile", moons, "--steps", "1", "--json", "m.json"]) == 2
    err = capsys.readouterr().err
    assert f"\n  tapegrad profile --json m.json {moons} --steps 1\n" in err


def test_help_explains_where_options_go(capsys):
    assert main(["profile", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tapegrad profile [options] (SCRIPT | -m MODULE) [ARGS...]\n")
    assert "'tapegrad profile plain.py -- --json x'" in out and "--dot-timeout SECONDS" in out
    assert "141 when stdout" in out and "--sort KEY" in out


# ---------------------------------------------------------------------------------------
# 7. -m MODULE
# ---------------------------------------------------------------------------------------

MODULE = """\
import sys
from tapegrad import Value
(Value(3.0) * Value(4.0)).backward()
print("argv0", sys.argv[0])
print("args", sys.argv[1:], "name", __name__, "path0", sys.path[0])
"""


def test_dash_m_runs_a_module_as_main(tmp_path, capsys, monkeypatch):
    write(tmp_path, "mymod.py", MODULE)
    monkeypatch.chdir(tmp_path)
    argv_before, path_before = sys.argv[:], sys.path[:]
    out = tmp_path / "m.json"
    assert main(["profile", "--json", str(out), "-m", "mymod", "a", "--top", "-x"]) == 2
    assert "\n  tapegrad profile --json " in capsys.readouterr().err   # --top is tapegrad's
    assert main(["profile", "-m", "mymod", "a", "--", "--top"]) == 0     # after the script's --
    assert "args ['a', '--', '--top'] name __main__" in capsys.readouterr().out
    assert main(["profile", "--json", str(out), "-m", "mymod", "--", "a", "--top", "-x"]) == 0
    stdout = capsys.readouterr().out
    assert f"argv0 {tmp_path / 'mymod.py'}\n" in stdout
    assert f"args ['a', '--top', '-x'] name __main__ path0 {tmp_path}\n" in stdout
    assert "== tapegrad profile: -m mymod -- a --top -x finished after" in stdout
    assert "3 rows (2 leaves), 2 levels" in stdout
    assert sys.argv == argv_before and sys.path == path_before
    data = json.loads(out.read_text())
    assert (data["module"], data["script"], data["args"]) == ("mymod", None,
                                                              ["a", "--top", "-x"])
    assert data["rows_recorded"] == 3 and data["backward_calls"] == 1


def test_dash_m_runs_a_packages_main_and_the_attached_form(tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    write(pkg, "__init__.py", "")
    write(pkg, "__main__.py", MODULE)
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "-mpkg", "z"]) == 0
    stdout = capsys.readouterr().out
    assert f"argv0 {pkg / '__main__.py'}\n" in stdout and "args ['z'] name __main__" in stdout


@pytest.mark.parametrize("files, argv, message", [
    ({}, ["-m", "no_such_module_here"], "no module named 'no_such_module_here'"),
    ({"lib/__init__.py": ""}, ["-m", "lib"],
     "'lib' is a package without a __main__ module; it cannot be run with -m"),
    ({"bad.py": "def f(:\n"}, ["-m", "bad"], "SyntaxError in module 'bad' at line 1"),
    ({}, ["-m"], "argument -m: expected a module name"),
    ({}, ["-m", ".rel"], "-m needs an absolute module name, got '.rel'"),
])
def test_dash_m_usage_errors(tmp_path, capsys, monkeypatch, files, argv, message):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tapegrad profile: error: {message}") and err.count("\n") == 1


def test_dash_m_traceback_starts_in_the_module(tmp_path, capsys, monkeypatch):
    write(tmp_path, "fails_mod.py", "def go():\n    raise LookupError('nope')\ngo()\n")
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "-m", "fails_mod"]) == 1
    err = capsys.readouterr().err
    assert "LookupError: nope" in err and "fails_mod.py" in err and "runpy" not in err


def test_dash_m_as_a_real_process(tmp_path):
    write(tmp_path, "mymod.py", MODULE)
    proc = run("-m", "mymod", "q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "args ['q'] name __main__" in proc.stdout and "3 rows (2 leaves)" in proc.stdout


# ---------------------------------------------------------------------------------------
# 8. --sort
# ---------------------------------------------------------------------------------------

def test_sort_by_name_orders_the_table_and_top_ops(tmp_path, capsys):
    script = write(tmp_path, "ops.py", """\
        from tapegrad import Value
        a, b = Value(2.0), Value(-3.0)
        ((a * b + a) - b).relu().backward()
    """)
    assert main(["profile", "--sort", "name", str(script)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("Name "))
    end = next(k for k in range(start + 2, len(lines)) if lines[k].startswith("---"))
    table = lines[start + 2:end]
    assert [line.split()[0] for line in table if not line.startswith(" ")] == ["backward",
                                                                               "outside"]
    phases = [line.split()[0] for line in table if line.startswith("  ")
              and not line.startswith("    ")]
    assert phases == sorted(phases) and "partials" in phases
    k = table.index(next(line for line in table if line.split()[0] == "partials"))
    assert [line.split()[0] for line in table[k + 1:k + 5]] == ["add", "mul", "relu", "sub"]
    top = next(k for k, line in enumerate(lines) if line.startswith("top ops"))
    assert [line.split()[0] for line in lines[top + 2:top + 7]] == ["add", "leaf", "mul",
                                                                    "relu", "sub"]


def test_sort_by_rows_orders_top_ops_by_tape_rows(tmp_path, capsys):
    script = write(tmp_path, "ops.py", """\
        from tapegrad import Value
        x = Value(1.0)
        for _ in range(5):
            x = x + 1
        y = (x * 2).relu()
    """)
    assert main(["profile", "--sort", "rows", str(script)]) == 0
    lines = capsys.readouterr().out.splitlines()
    top = next(k for k, line in enumerate(lines) if line.startswith("top ops"))
    assert [line.split()[:2] for line in lines[top + 2:top + 6]] == [
        ["add", "5"], ["leaf", "1"], ["mul", "1"], ["relu", "1"]]


def test_sort_rejects_unknown_keys(capsys):
    assert main(["profile", "--sort", "speed", "x.py"]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and ("argument --sort: invalid choice: 'speed' (choose from "
                                "'total', 'time', 'self', 'calls', 'avg', 'rows', "
                                "'ns-per-row', 'name')") in err


# ---------------------------------------------------------------------------------------
# 9. the JSON header; 10. singular words, no empty ops line
# ---------------------------------------------------------------------------------------

def test_json_starts_with_schema_and_tapegrad_versions(tmp_path, capsys):
    script = write(tmp_path, "chain.py", CHAIN)
    out = tmp_path / "p.json"
    assert main(["profile", "--json", str(out), str(script)]) == 0
    data = json.loads(out.read_text())
    assert list(data)[:2] == ["schema_version", "tapegrad_version"]
    assert data["schema_version"] == 1 and type(data["schema_version"]) is int
    assert data["tapegrad_version"] == tapegrad.__version__
    assert data["script"] == str(script) and data["module"] is None


def test_one_of_everything_is_singular(tmp_path, capsys):
    script = write(tmp_path, "one.py", "from tapegrad import Value\nValue(1.0).backward()\n")
    assert main(["profile", str(script)]) == 0
    out = capsys.readouterr().out
    assert ("1 row (1 leaf), 1 level (widest 1, median 1), max fan-out 0, longest "
            "single-consumer chain 1\nops: leaf 1\nmemory: ") in out
    assert "; 1 row recorded;" in out
    for wrong in ("1 leaves", "1 levels", "1 rows", "1 calls", "1 nodes"):
        assert wrong not in out, wrong


def test_an_empty_tape_has_no_ops_line(tmp_path, capsys):
    script = write(tmp_path, "nothing.py", "print('hi')\n")
    assert main(["profile", str(script)]) == 0
    out = capsys.readouterr().out
    assert "\n0 rows: the tape is empty\nrows recorded during the run: 0 " in out
    assert not any(line.startswith("ops:") for line in out.splitlines())
    assert "top ops: none (the tape is empty and no backward ran)" in out
