"""tapegrad.profile and the ``tapegrad profile`` command line.

Timings are only checked to be non-negative numbers; counts are checked exactly.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import tapegrad
from tapegrad import Tape, Value, current_tape
from tapegrad import tape as tape_module
from tapegrad.__main__ import _Progress, main
from tapegrad._sweep import Timing
from tapegrad.ops import OPS
from tapegrad.profiler import OUTSIDE, profile

PHASES = ("interval", "schedule", "partials", "levels", "leaves")


@pytest.fixture(autouse=True)
def no_probes_left():
    assert tape_module.probes() == ()
    yield
    assert tape_module.probes() == (), "a profiler stayed registered"


def small_graph() -> Value:
    """A few rows, every one an ancestor of the result, no chain long enough to fold."""
    a, b, c = Value(2.0), Value(-3.0), Value(0.5)
    d = a * b + c           # mul, add
    e = d * d - a           # mul, sub
    f = (e * c).relu()      # mul, relu
    return f + d * b        # mul, add


def nonleaf_op_counts(t: Tape) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in t.opcodes.tolist():
        if code:
            counts[OPS[code].name] = counts.get(OPS[code].name, 0) + 1
    return counts


def is_time(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x >= 0.0


# ---------------------------------------------------------------------------------------
# profile()
# ---------------------------------------------------------------------------------------

def test_counts_rows_calls_and_ops():
    with Tape() as t, profile() as prof:
        root = small_graph()
        root.backward()
        root.backward()
    assert prof.rows_recorded == len(t) == 11
    assert prof.backward_calls == 2 and prof.replay_calls == 0
    d = prof.to_dict()
    ops = nonleaf_op_counts(t)
    assert {k: v["rows"] for k, v in d["backward_ops"].items()} == {k: 2 * v for k, v in
                                                                     ops.items()}
    assert all(v["calls"] == 2 for v in d["backward_ops"].values())
    assert d["backward_rows"] == 2 * sum(ops.values())    # the swept interval, twice
    assert set(d["backward_phases"]) == set(PHASES)
    assert d["backward_groups"]["rows"] == d["backward_rows"]
    assert d["backward_tapes"][t.name]["calls"] == 2
    for key in ("wall_seconds", "outside_seconds", "backward_seconds", "overhead_seconds"):
        assert is_time(d[key]), key
    assert d["outside_seconds"] + d["backward_seconds"] <= d["wall_seconds"]
    assert prof.backward_seconds == d["backward_seconds"]


def test_rows_recorded_counts_every_tape_and_compaction_does_not_lower_it():
    with profile() as prof:
        with Tape() as t1:
            x = Value(1.0)
            for _ in range(10):
                x = x + 1
        with Tape() as t2:
            y = Value(1.0) * 3
        del x, y
        t1.compact()
    assert prof.rows_recorded == 11 + 2
    assert len(t1) < 11 and len(t2) == 2


def test_backward_of_a_leaf_and_a_block_without_backward():
    with Tape(), profile() as prof:
        Value(3.0).backward()
    assert prof.backward_calls == 1 and prof.rows_recorded == 1
    with Tape(), profile() as idle:
        Value(1.0) + 2
    d = idle.to_dict()
    assert d["backward_calls"] == 0 and d["backward_ns_per_row"] is None
    assert d["backward_ops"] == {} and d["backward_groups"]["widest"] is None
    assert "backward" in idle.report()


def test_report_has_the_expected_rows():
    with Tape(), profile() as prof:
        small_graph().backward()
    text = prof.report()
    lines = text.splitlines()
    assert lines[0].split() == ["Name", "Calls", "Total", "Self", "Self", "%", "Avg", "Rows",
                                "ns/row"]
    names = [line.split()[0] for line in lines[2:] if line and not line.startswith("-")]
    for name in ("outside", "backward", *PHASES, "mul", "add", "sub", "relu", "groups"):
        assert name in names, name
    indent = {line.split()[0]: len(line) - len(line.lstrip()) for line in lines[2:9]}
    assert indent["outside"] == indent["backward"] == 0 and indent["interval"] == 2
    assert "wall " in text and "level groups:" in text and "replay" not in names
    short = [line.split()[0] for line in prof.report(top=1).splitlines()[2:]
             if line.startswith("    ")]
    assert len(short) == 3 and short[0] in ("mul", "add", "sub", "relu")   # the slowest op
    assert short[1:] == ["(3", "groups"] and "(3 more ops)" in prof.report(top=1)
    out = io.StringIO()
    prof.print_report(file=out)
    assert out.getvalue() == text + "\n"
    with pytest.raises(ValueError, match="top must be a positive int"):
        prof.report(top=0)


def test_to_dict_round_trips_through_json():
    with Tape(), profile() as prof:
        small_graph().backward()
    d = prof.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert {"wall_seconds", "outside_seconds", "rows_recorded",
            "backward_seconds", "backward_calls", "backward_rows", "backward_phases",
            "backward_ops", "backward_groups", "replay_seconds", "replay_calls"} <= set(d)


def test_replays_are_counted_like_backwards():
    timing = Timing()
    timing.phases.update({"plan": 0.001, "forward": 0.003})
    timing.op("add", 10, 0.001)
    timing.op("mul chains", 20, 0.0015)
    timing.groups.extend([(1, 10, 0.0005), (2, 20, 0.0007)])
    with profile() as prof:
        prof.on_replay("t", 30, 0.005, timing)
        prof.on_replay("t", 30, 0.005, timing)
    d = prof.to_dict()
    assert prof.replay_calls == 2 and d["replay_rows"] == 60
    assert d["replay_ops"]["add"] == {"calls": 2, "rows": 20, "seconds": pytest.approx(0.002)}
    assert d["replay_groups"]["count"] == 4 and d["replay_groups"]["rows"] == 60
    assert d["replay_phases"] == {"plan": pytest.approx(0.002), "forward": pytest.approx(0.006)}
    names = [line.split()[0] for line in prof.report().splitlines()[2:] if line.strip()]
    assert {"replay", "plan", "forward", "add", "mul"} <= set(names)
    assert prof.outside_seconds <= prof.wall_seconds


def test_real_replays_and_compiled_backward():
    with Tape() as t, profile() as prof:
        root = small_graph()
        root.backward()           # the eager sweep
        t.forward()               # a replay; later backward calls run a compiled plan
        root.backward()
        t.forward()
    d = prof.to_dict()
    assert prof.backward_calls == 2 and prof.replay_calls == 2
    assert d["replay_rows"] == 2 * len(t)
    replayed = {k.split()[0] for k in d["replay_ops"]}
    assert replayed <= set(nonleaf_op_counts(t)) and is_time(d["replay_seconds"])
    names = [line.split()[0] for line in prof.report().splitlines()[2:] if line.strip()]
    assert "replay" in names and "backward" in names


def test_self_times_add_up_to_each_total():
    with Tape() as t, profile() as prof:
        root = small_graph()
        root.backward()
        t.forward()
        root.backward()
    table = prof.table()
    starts = [k for k, r in enumerate(table) if r.depth == 0] + [len(table)]
    kinds = {table[a].name: table[a:b] for a, b in zip(starts, starts[1:])}
    for kind in ("backward", "replay"):
        rows = kinds[kind]
        total = rows[0].total
        selfs = [r.self for r in rows]
        assert sum(selfs) == pytest.approx(total, rel=1e-9, abs=1e-12), kind
        assert min(selfs) >= -1e-6, rows   # the sweep's clock starts a hair early


def test_chrome_trace_is_valid_and_nested(tmp_path):
    with Tape(), profile() as prof:
        root = small_graph()
        root.backward()
        Value(1.0) * 2
        root.backward()
    path = prof.export_chrome_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for e in spans:
        assert isinstance(e["name"], str) and e["pid"] == os.getpid()
        assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["tid"], int)
    names = [e["name"] for e in spans]
    assert names.count("backward") == 2 and names.count("outside") == 3
    assert sum(e["args"]["rows"] for e in spans if e["name"] == "outside") == 13
    for name in PHASES + ("mul", "add"):
        assert names.count(name) == 2, name

    def inside(child, parent):
        return parent["ts"] - 1e-3 <= child["ts"] and \
            child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + 1e-3

    backwards = [e for e in spans if e["name"] == "backward"]
    for e in spans:
        if e["cat"] in ("phase", "op", "level"):
            assert any(inside(e, b) for b in backwards), e
    partials = [e for e in spans if e["name"] == "partials"]
    for e in spans:
        if e["cat"] == "op":
            assert any(inside(e, p) for p in partials), e
    assert trace["otherData"]["tapegrad_profile"]["backward_calls"] == 2


def test_traced_calls_are_limited_but_all_are_counted(tmp_path):
    with Tape() as t, profile(max_traced_calls=1) as prof:
        root = small_graph()
        for _ in range(3):
            root.backward()
    d = prof.to_dict()
    assert d["backward_calls"] == 3 and d["traced_calls"] == 1 and d["untraced_calls"] == 2
    assert d["backward_ops"]["mul"]["rows"] == 3 * nonleaf_op_counts(t)["mul"]
    events = prof.chrome_trace()["traceEvents"]
    assert [e["name"] for e in events].count("backward") == 1
    assert any(e["ph"] == "i" and "not traced" in e["name"] for e in events)
    assert "not in the trace" in prof.report()
    with pytest.raises(ValueError, match="max_traced_calls"):
        profile(max_traced_calls=-1)


def test_tracing_stops_at_the_level_group_budget(monkeypatch):
    monkeypatch.setattr(sys.modules["tapegrad.profiler"], "_MAX_TRACED_GROUPS", 12)
    with Tape(), profile() as prof:
        root = small_graph()
        for _ in range(5):
            root.backward()
    d = prof.to_dict()
    per_call = d["backward_groups"]["count"] // 5
    assert 0 < per_call <= 12
    assert d["traced_calls"] == 12 // per_call and d["backward_calls"] == 5
    assert d["traced_calls"] + d["untraced_calls"] == 5


def test_export_errors_name_the_problem(tmp_path):
    with profile() as prof:
        pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prof.export_chrome_trace(tmp_path / "missing" / "trace.json")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        prof.export_chrome_trace(tmp_path)
    with pytest.raises(TypeError, match="file path"):
        prof.export_chrome_trace(42)


def test_nested_blocks_both_see_the_inner_calls():
    with Tape():
        root = small_graph()
        with profile() as outer:
            root.backward()
            with profile() as inner:
                assert tape_module.probes() == (outer, inner)
                root.backward()
            assert tape_module.probes() == (outer,)
            root.backward()
    assert outer.backward_calls == 3 and inner.backward_calls == 1


def test_overlapping_blocks_stop_counting_when_they_end():
    with Tape():
        root = small_graph()
        first, second = profile(), profile()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)       # ends while the later one is still active
        assert tape_module.probes() == (second,)
        root.backward()
        second.__exit__(None, None, None)
    assert first.backward_calls == 0 and second.backward_calls == 1


def test_an_exception_in_the_block_unregisters_the_profiler():
    with pytest.raises(KeyError):
        with Tape(), profile() as prof:
            small_graph().backward()
            raise KeyError("inside the block")
    assert prof.backward_calls == 1 and json.dumps(prof.to_dict())
    with pytest.raises(RuntimeError, match="entered only once"):
        with prof:
            pass


def test_results_can_be_read_inside_the_block():
    with Tape(), profile() as prof:
        small_graph().backward()
        assert prof.backward_calls == 1 and prof.rows_recorded == 11
        assert "backward" in prof.report() and is_time(prof.wall_seconds)
        assert "inside" not in repr(prof)


def test_a_foreign_probe_on_top_is_left_alone():
    seen = []

    class Probe:
        def on_backward(self, *args):
            seen.append(args)

    with Tape(), profile() as prof:
        root = small_graph()
        probe = Probe()
        tape_module.add_probe(probe)
        try:
            root.backward()
        finally:
            tape_module.remove_probe(probe)
    assert len(seen) == 1 and prof.backward_calls == 0


# ---------------------------------------------------------------------------------------
# the command line, in process
# ---------------------------------------------------------------------------------------

CHAIN = """\
import sys
from tapegrad import Value
x0 = Value(1.0)
x = x0
for _ in range(50):
    x = x * 1.01 + 0.1
x.backward()
print("argv", sys.argv[1:], "name", __name__)
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_cli_runs_a_script_and_writes_json(tmp_path, capsys):
    script = write(tmp_path, "chain.py", CHAIN)
    out = tmp_path / "profile.json"
    argv_before, path_before = sys.argv[:], sys.path[:]
    code = main(["profile", "--no-progress", "--json", str(out), str(script), "a", "--b", "-h"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "argv ['a', '--b', '-h'] name __main__" in stdout
    assert "101 rows (1 leaf), 101 levels" in stdout
    assert OUTSIDE in stdout and "backward" in stdout and "top ops" in stdout
    assert sys.argv == argv_before and sys.path == path_before
    assert current_tape().name != "profile" and tape_module.entered_tapes() == ()
    data = json.loads(out.read_text())
    assert {"nodes", "ops", "depth", "max_width", "nbytes", "outside_seconds",
            "backward_seconds", "rows_recorded", "backward_calls", "status"} <= set(data)
    assert data["nodes"] == data["rows_recorded"] == 101 and data["depth"] == 101
    assert data["ops"] == {"leaf": 1, "mul": 50, "add": 50}
    assert data["backward_calls"] == 1 and data["status"] == "ok" and data["exit_code"] == 0
    assert is_time(data["outside_seconds"]) and is_time(data["backward_seconds"])


def test_cli_script_imports_modules_beside_it(tmp_path, capsys):
    write(tmp_path, "helper.py", "def square(v):\n    return v * v\n")
    script = write(tmp_path, "main.py", """\
        from helper import square
        from tapegrad import Value
        y = square(Value(3.0))
        y.backward()
        print("y", y.data)
    """)
    assert main(["profile", str(script)]) == 0
    assert "y 9.0" in capsys.readouterr().out


def test_cli_missing_script_exits_2_with_one_line(tmp_path, capsys):
    assert main(["profile", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such script" in err and "nope.py" in err
    assert main(["profile", str(tmp_path)]) == 2
    assert "not a file" in capsys.readouterr().err


def test_cli_syntax_error_exits_2_with_one_line(tmp_path, capsys):
    script = write(tmp_path, "bad.py", "x = 1\ndef f(:\n    pass\n")
    assert main(["profile", str(script)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "SyntaxError" in captured.err
    assert "line 2" in captured.err and captured.out == ""


def test_cli_raising_script_reports_the_partial_tape(tmp_path, capsys):
    script = write(tmp_path, "boom.py", """\
        from tapegrad import Value
        x = Value(2.0)
        for _ in range(9):
            x = x * 2
        x.backward()

        def fail():
            raise ValueError("boom")

        fail()
    """)
    out = tmp_path / "partial.json"
    assert main(["profile", "--json", str(out), str(script)]) == 1
    captured = capsys.readouterr()
    assert "Traceback (most recent call last)" in captured.err
    assert "ValueError: boom" in captured.err and "boom.py" in captured.err
    assert "in fail" in captured.err and "runpy" not in captured.err
    assert "10 rows (1 leaf)" in captured.out and "exit status 1" in captured.out
    data = json.loads(out.read_text())
    assert data["status"] == "error" and data["nodes"] == 10 and data["backward_calls"] == 1


@pytest.mark.parametrize("body, code", [("raise SystemExit(0)", 0), ("sys.exit()", 0),
                                        ("sys.exit(3)", 3), ("sys.exit('bad input')", 1)])
def test_cli_system_exit(tmp_path, capsys, body, code):
    script = write(tmp_path, "exits.py", f"import sys\nfrom tapegrad import Value\n"
                                         f"Value(1.0) + 1\n{body}\nprint('not reached')\n")
    assert main(["profile", str(script)]) == code
    captured = capsys.readouterr()
    assert "not reached" not in captured.out and "2 rows" in captured.out
    assert ("bad input" in captured.err) == (code == 1)


@pytest.mark.parametrize("argv", [[], ["profile"], ["nope"], ["profile", "--top", "0", "x.py"],
                                  ["profile", "--json"]])
def test_cli_bad_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_help_exits_0(capsys):
    assert main(["profile", "--help"]) == 0
    assert "(SCRIPT | -m MODULE) [ARGS...]" in capsys.readouterr().out


def test_cli_checks_outputs_before_running(tmp_path, capsys):
    marker = tmp_path / "ran"
    script = write(tmp_path, "touch.py", f"open({str(marker)!r}, 'w').close()\n")
    for option, target in (("--json", tmp_path / "missing" / "x.json"),
                           ("--trace", tmp_path / "missing" / "t.json"),
                           ("--plot", tmp_path / "x.gif"),
                           ("--dot", tmp_path / "x.txt")):
        assert main(["profile", option, str(target), str(script)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option in err, err
    assert not marker.exists()


def test_cli_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    script = write(tmp_path, "chain.py", CHAIN)
    png = tmp_path / "profile.png"
    assert main(["profile", "--plot", str(png), str(script)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot to {png}" in capsys.readouterr().out


def test_cli_plot_of_an_empty_tape(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    script = write(tmp_path, "nothing.py", "print('hi')\n")
    png = tmp_path / "empty.png"
    assert main(["profile", "--plot", str(png), str(script)]) == 0
    assert png.stat().st_size > 0
    assert "0 rows" in capsys.readouterr().out


def test_cli_dot_writes_a_collapsed_dot_file(tmp_path, capsys):
    pytest.importorskip("pydot")
    script = write(tmp_path, "chain.py", CHAIN)
    dot = tmp_path / "tape.dot"
    assert main(["profile", "--dot", str(dot), str(script)]) == 0
    assert dot.read_text().lstrip().startswith(("digraph", "strict digraph"))
    assert "collapsed by" in capsys.readouterr().out


def test_cli_dot_too_large_fails_with_a_message(tmp_path, capsys):
    pytest.importorskip("pydot")
    script = write(tmp_path, "wide.py", """\
        from tapegrad import Value
        xs = [Value(float(i)) for i in range(40)]
        ys = [x * x for x in xs] + [x + 1 for x in xs] + [x.relu() for x in xs]
    """)
    dot = tmp_path / "tape.dot"
    assert main(["profile", "--dot", str(dot), "--dot-max-nodes", "2", str(script)]) == 1
    assert "--dot-max-nodes" in capsys.readouterr().err and not dot.exists()


def test_cli_trace(tmp_path, capsys):
    script = write(tmp_path, "chain.py", CHAIN)
    trace = tmp_path / "trace.json"
    assert main(["profile", "--trace", str(trace), str(script)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert [e["name"] for e in events].count("backward") == 1


def test_cli_cleans_up_tapes_the_script_left_entered(tmp_path, capsys):
    script = write(tmp_path, "leaky.py", "import tapegrad\ntapegrad.Tape('leak').__enter__()\n")
    assert main(["profile", str(script)]) == 0
    assert "left tapes entered ('leak')" in capsys.readouterr().err
    assert tape_module.entered_tapes() == ()


def test_progress_prints_only_after_the_first_delay():
    with profile() as prof:
        stream = io.StringIO()
        quiet = _Progress(prof, stream, first=60.0, every=60.0)
        quiet.start()
        quiet.stop()
        assert stream.getvalue() == ""
        progress = _Progress(prof, stream, first=0.01, every=0.01)
        progress.start()
        deadline = time.monotonic() + 10
        while progress.lines < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        progress.stop()
    assert progress.lines >= 2
    assert "rows recorded" in stream.getvalue() and "backward calls" in stream.getvalue()


# ---------------------------------------------------------------------------------------
# the command line, as a real process
# ---------------------------------------------------------------------------------------

def test_python_dash_m_tapegrad_profile(tmp_path):
    script = write(tmp_path, "chain.py", CHAIN)
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "tapegrad", "profile", "--json", str(out),
                           str(script), "x"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "argv ['x'] name __main__" in proc.stdout and "backward" in proc.stdout
    assert json.loads(out.read_text())["nodes"] == 101


def console_script_tests_this_checkout() -> bool:
    """Whether the ``tapegrad`` on PATH imports the tapegrad under test (an editable
    install of another checkout would test that one instead)."""
    exe = shutil.which("tapegrad")
    if exe is None:
        return False
    with open(exe, "rb") as f:
        first = f.readline().decode(errors="replace")
    if not first.startswith("#!"):
        return False
    proc = subprocess.run([*first[2:].split(), "-c", "import tapegrad; print(tapegrad.__file__)"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    return proc.returncode == 0 and os.path.samefile(proc.stdout.strip(), tapegrad.__file__)


@pytest.mark.skipif(not console_script_tests_this_checkout(),
                    reason="no console script for this checkout of tapegrad")
def test_console_script(tmp_path):
    proc = subprocess.run(["tapegrad", "profile", str(tmp_path / "missing.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such script" in proc.stderr


def test_tapegrad_package_still_imports_cleanly():
    assert tapegrad.Value is Value


# ---------------------------------------------------------------------------------------
# rows recorded, the outside row, sorting, plurals, notebook reprs
# ---------------------------------------------------------------------------------------

def chain_rows(n: int) -> Value:
    """1 leaf and ``n`` add rows (the constant is not a row)."""
    x = Value(0.0)
    for _ in range(n):
        x = x + 1
    return x


def test_rows_recorded_counts_reset_dropped_and_other_threads_tapes():
    import gc
    import threading

    with profile() as prof:
        with Tape("reset") as t1:
            chain_rows(1000)
        t1.reset()
        assert len(t1) == 0 and prof.rows_recorded == 1001
        with Tape("dropped"):
            kept = chain_rows(1000)
        del kept
        gc.collect()

        def work():
            with Tape("thread"):
                chain_rows(1000)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert prof.rows_recorded == 3003
    assert prof.to_dict()["rows_recorded"] == 3003
    assert prof.table()[0].rows == 3003


def test_the_first_row_is_time_outside_backward_and_replay_without_a_rate():
    with Tape(), profile() as prof:
        small_graph().backward()
    first = prof.table()[0]
    assert first == (0, OUTSIDE, 1, prof.outside_seconds, prof.outside_seconds, 11, False)
    assert first.name == "outside backward/replay" and first.ns_per_row is None
    line = prof.report().splitlines()[2]
    assert line.startswith("outside backward/replay ") and line.split()[-2:] == ["11", "-"]
    assert "ns per row" not in prof.report()
    assert "not recording alone" in prof.report()
    d = prof.to_dict()
    assert "record_seconds" not in d and "record_ns_per_op" not in d
    assert d["outside_seconds"] == prof.outside_seconds
    with pytest.warns(DeprecationWarning, match="use outside_seconds"):
        assert prof.record_seconds == prof.outside_seconds


def test_report_sort_orders_siblings_and_rejects_unknown_keys():
    with Tape(), profile() as prof:
        root = small_graph()
        root.backward()
        root.backward()
    default = prof.table()
    assert [r.name for r in default if r.depth == 1] == list(PHASES)   # the order they ran

    def names(rows, depth):
        return [r.name for r in rows if r.depth == depth]

    by_name = prof.table(sort="name")
    assert names(by_name, 0) == ["backward", OUTSIDE]
    assert names(by_name, 1) == sorted(PHASES)
    ops = [r.name for r in by_name if r.depth == 2 and not r.name.startswith("groups")]
    assert ops == ["add", "mul", "relu", "sub"]
    by_calls = prof.table(sort="calls")
    assert names(by_calls, 0) == ["backward", OUTSIDE]        # 2 calls, then 1
    by_rows = prof.table(sort="rows")
    op_rows = [r.rows for r in by_rows if r.depth == 2 and not r.name.startswith("groups")]
    assert op_rows == sorted(op_rows, reverse=True) == [8, 4, 2, 2]
    # children stay under their parent: the ops under partials, the groups under levels
    for rows in (by_name, by_calls, by_rows, prof.table(sort="time"), prof.table(sort="self")):
        assert sorted(rows) == sorted(default)
        parent = {}
        for r in rows:
            if r.depth == 1:
                current = r.name
            elif r.depth == 2:
                parent[r.name] = current
        assert parent == {"mul": "partials", "add": "partials", "sub": "partials",
                          "relu": "partials", "groups <=16 rows": "levels"}
    assert prof.report(sort="name").splitlines()[2].startswith("backward ")
    short = [r.name for r in prof.table(top=1, sort="name") if r.depth == 2]
    assert short[0] == "groups <=16 rows" and short[2] == "(3 more ops)"   # levels < partials
    assert short[1] in ("mul", "add", "sub", "relu")                       # the slowest op
    with pytest.raises(ValueError, match="sort must be one of total, time, self, calls, avg, "
                                         "rows, ns-per-row, name or None, got 'speed'"):
        prof.report(sort="speed")


def test_plural_and_singular_words_in_the_report():
    from tapegrad.profiler import plural

    assert plural(1, "leaf", "leaves") == "1 leaf" and plural(2, "leaf", "leaves") == "2 leaves"
    assert plural(0, "row") == "0 rows" and plural(1_000, "call") == "1,000 calls"
    with Tape(), profile() as prof:
        a = Value(1.0)
        b = (a * 2).relu()
        b.backward()
    text = prof.report(top=1)
    assert "(1 more op)" in text
    assert "backward level groups: 2 in 1 call; widest 1 row (level " in text
    assert repr(prof).startswith("<tapegrad.profile done: 3 rows recorded, 1 backward call, "
                                 "0 replays in ")


def test_untraced_note_is_singular_for_one_call():
    with Tape(), profile(max_traced_calls=1) as prof:
        root = small_graph()
        root.backward()
        root.backward()
    assert "1 call after the first 1 is in the totals but not in the trace" in prof.report()
    names = [e["name"] for e in prof.chrome_trace()["traceEvents"] if e["ph"] == "i"]
    assert names == ["trace ends: 1 later call not traced"]


def test_html_repr_is_a_table_holding_the_numbers():
    from html.parser import HTMLParser

    with Tape(), profile() as prof:
        root = small_graph()
        root.backward()
        root.backward()

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.stack, self.head = [], [], []

        def handle_starttag(self, tag, attrs):
            self.stack.append(tag)
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.rows[-1].append("")

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag, tag      # well nested

        def handle_data(self, data):
            if self.stack and self.stack[-1] in ("td", "th"):
                self.rows[-1][-1] += data

    parser = Cells()
    parser.feed(prof._repr_html_())
    parser.close()
    assert parser.stack == []
    head, *body = parser.rows
    assert head == ["Name", "Calls", "Total", "Self", "Self %", "Avg", "Rows", "ns/row"]
    table = prof.table()
    assert len(body) == len(table)
    by_name = {cells[0].strip(): cells for cells in body}
    assert by_name[OUTSIDE][1] == "1" and by_name[OUTSIDE][6] == "11"
    assert by_name[OUTSIDE][7] == "-"
    assert by_name["backward"][1] == "2" and by_name["backward"][6] == "16"
    assert by_name["mul"][6] == "8" and by_name["sub"][6] == "2"

    class Pretty:
        def __init__(self):
            self.out = ""

        def text(self, s):
            self.out += s

    p = Pretty()
    prof._repr_pretty_(p, False)
    assert p.out == repr(prof) + "\n" + prof.report()
    cyclic = Pretty()
    prof._repr_pretty_(cyclic, True)
    assert cyclic.out == repr(prof)
