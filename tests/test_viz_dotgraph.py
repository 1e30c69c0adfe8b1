"""tapegrad.viz.DotGraph, automatic collapsing, constants, escaping and dot timeouts.

Rendering tests run only where Graphviz's ``dot`` program is installed; the timeout
tests put a fake ``dot`` that sleeps on ``PATH``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import sys

import pytest

from tapegrad import Tape, Value, scope, viz
from tapegrad.viz import (
    DotGraph,
    GraphTooLargeError,
    GraphvizError,
    GraphvizTimeoutError,
    draw_dot,
    export_dot,
    save_dot,
)

pydot = pytest.importorskip("pydot")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed")
_PSEUDO = {"node", "edge", "graph"}


def parse(text: str) -> pydot.Dot:
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, "pydot could not parse the DOT text"
    return graphs[0]


def nodes(graph) -> dict:
    found = {n.get_name(): n for n in graph.get_nodes() if n.get_name() not in _PSEUDO}
    for sub in graph.get_subgraphs():
        found.update(nodes(sub))
    return found


def edges(graph) -> list:
    found = [(e.get_source(), e.get_destination()) for e in graph.get_edges()]
    for sub in graph.get_subgraphs():
        found += edges(sub)
    return found


def small() -> Value:
    with Tape():
        a = Value(2.0, label="a")
        b = (a * 3 + 1).tanh()
        b.label = "b"
    b.backward()
    return b


def chain(n: int) -> tuple[Tape, Value]:
    with Tape() as t:
        x = Value(1.0, label="x")
        for _ in range(n):
            x = x * 1.0001 + 1e-4
    return t, x


def rows_drawn(graph) -> int:
    total = 0
    for name, node in nodes(graph).items():
        rows = node.get_attributes().get("rows")
        if rows is not None:
            total += int(rows.strip('"'))
        elif name.startswith("v"):
            total += 1
    return total


def fake_dot(tmp_path, monkeypatch, script: str) -> None:
    """Put an executable ``dot`` running ``script`` (sh) first on PATH."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    exe = bin_dir / "dot"
    exe.write_text("#!/bin/sh\n" + script + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))


# ---------------------------------------------------------------------------------------
# the DotGraph object
# ---------------------------------------------------------------------------------------

def test_draw_dot_returns_a_dotgraph_that_still_offers_pydot():
    b = small()
    g = draw_dot(b)
    assert isinstance(g, DotGraph) and isinstance(g.pydot, pydot.Dot)
    assert g.format == "svg" and draw_dot(b, format="png").format == "png"
    assert g.source == g.pydot.to_string() == g.to_string() == str(g)
    assert [n.get_name() for n in g.get_nodes()] == \
        [n.get_name() for n in g.pydot.get_nodes()]         # delegated to pydot
    assert callable(g.create_svg) and callable(g.write_png)
    assert (g.node_count, g.edge_count, g.rows) == (7, 6, 4)
    assert len(nodes(parse(g.source))) == 7 and len(edges(parse(g.source))) == 6
    assert g.collapse is None and g.note is None
    assert repr(g) == "<tapegrad.viz.DotGraph: 4 rows as 7 nodes and 6 edges>"
    with pytest.raises(AttributeError, match="no_such_method"):
        g.no_such_method                                   # noqa: B018
    assert viz.render_dot(g) == g.source
    with pytest.raises(TypeError, match="already drawn"):
        viz.render_dot(g, collapse="chains")
    wrapped = DotGraph(g.pydot)                             # any pydot.Dot can be wrapped
    assert (wrapped.node_count, wrapped.edge_count) == (7, 6)
    with pytest.raises(TypeError, match="DotGraph wraps a pydot.Dot, got str"):
        DotGraph("digraph {}")


@needs_dot
def test_notebook_display_is_an_svg_picture():
    g = draw_dot(small())
    bundle = g._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}
    assert "<svg" in bundle["image/svg+xml"] and "tanh" in bundle["image/svg+xml"]
    assert bundle["text/plain"] == repr(g)
    assert g._repr_svg_() == bundle["image/svg+xml"]
    assert set(g._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert set(g._repr_mimebundle_(exclude=["image/svg+xml"])) == {"text/plain"}


def test_notebook_display_without_graphviz_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    g = draw_dot(small())
    bundle = g._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert "no picture" in bundle["text/plain"] and "apt-get install graphviz" in \
        bundle["text/plain"]
    assert g._repr_svg_() is None


@needs_dot
def test_pipe_and_render_work_like_graphviz(tmp_path, monkeypatch):
    g = draw_dot(small())
    assert g.pipe().lstrip().startswith((b"<?xml", b"<svg"))
    assert g.pipe("png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert g.pipe(format="dot") == g.source.encode()
    monkeypatch.chdir(tmp_path)
    assert g.render("gout") == "gout.svg"                   # micrograd's notebook call
    assert (tmp_path / "gout").read_text() == g.source
    assert "<svg" in (tmp_path / "gout.svg").read_text()
    out = g.render("expr", directory=tmp_path / "pics", format="pdf", cleanup=True)
    assert out == os.fspath(tmp_path / "pics" / "expr.pdf")
    assert (tmp_path / "pics" / "expr.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (tmp_path / "pics" / "expr").exists()        # cleanup removed the source
    assert g.render() == "Digraph.gv.svg" and (tmp_path / "Digraph.gv").exists()
    with pytest.raises(ValueError, match="format must be one of"):
        g.pipe("jpg")


def test_render_to_dot_and_save_dot_need_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    g = draw_dot(small(), format="dot")
    assert g.render("x", directory=tmp_path) == os.fspath(tmp_path / "x.dot")
    assert (tmp_path / "x.dot").read_text() == g.source
    assert save_dot(g, tmp_path / "y") == tmp_path / "y.dot"     # the graph's format
    assert save_dot(g.pydot, tmp_path / "z.gv").read_text() == g.source


# ---------------------------------------------------------------------------------------
# caps and automatic collapsing
# ---------------------------------------------------------------------------------------

def test_large_graphs_collapse_automatically_with_a_note():
    t, x = chain(1500)                       # 3,001 rows: 6,001 nodes row by row
    g = draw_dot(x)
    assert g.collapse == "chains" and g.node_count == 2 and rows_drawn(g.pydot) == len(t)
    assert g.note.startswith("collapsed: 3,001 rows drawn as 2 nodes (collapse='chains'); "
                             "row by row they need 6,001 nodes and 6,000 edges, more than "
                             "max_nodes=2,500.")
    label = parse(g.source).get_attributes()["label"]
    assert "collapsed: 3,001 rows" in label and "collapse= to change" in label
    assert g.note in repr(g)
    with pytest.raises(GraphTooLargeError, match="6,001 nodes to draw: more than "
                                                 "max_nodes=2,500"):
        draw_dot(x, collapse=None)           # an explicit view is never changed
    assert draw_dot(x, collapse=None, max_nodes=6001, max_edges=6000).collapse is None


def scoped_mlp() -> Value:
    rng = random.Random(1)
    with Tape():
        x = [Value(1.0, label="x0"), Value(-2.0, label="x1")]
        for i, width in enumerate((3, 2), start=1):
            with scope(f"layer{i}"):
                out = []
                for j in range(width):
                    with scope(f"neuron{j}"):
                        act = sum((Value(rng.uniform(-1, 1)) * xi for xi in x), Value(0.0))
                        out.append(act.relu())
            x = out
        loss = x[0] + x[1]
    loss.backward()
    return loss


def test_auto_picks_the_first_view_that_fits():
    loss = scoped_mlp()
    size = {c: draw_dot(loss, collapse=c, max_nodes=10**6).node_count
            for c in (None, "chains", "trees", "levels")}
    assert size["trees"] < size["chains"] < size[None]       # so each cap tests an order
    for cap in range(1, size[None] + 2):
        fitting = [c for c in (None, "chains", "trees", "levels") if size[c] <= cap]
        if not fitting:
            with pytest.raises(GraphTooLargeError, match="collapse='auto' tried"):
                draw_dot(loss, max_nodes=cap)
            continue
        g = draw_dot(loss, max_nodes=cap)
        assert g.collapse == fitting[0] and g.node_count == size[fitting[0]]
        assert (g.note is None) == (fitting[0] is None)


def test_the_edge_cap_counts_ranks_crossed_by_long_edges():
    with Tape():
        x = Value(0.5, label="x")
        y = Value(0.0)
        for _ in range(60):                  # x feeds every step: long edges from x
            y = y + x * x
    g = draw_dot(y, collapse=None, max_edges=10**6)
    assert g.edge_count <= 300 and g.node_count <= 300
    with pytest.raises(GraphTooLargeError, match=r"long edges cross [\d,]+ ranks: more "
                                                 r"than 4 × max_edges=300"):
        draw_dot(y, collapse=None, max_edges=300)
    with Tape():                             # the same size, no long edges: fits
        z = Value(0.0)
        for _ in range(60):
            z = z + 0.5 * 0.5
    assert draw_dot(z, collapse=None, max_edges=300).collapse is None


def test_the_error_when_nothing_fits_keeps_its_first_words():
    with Tape("v"):
        root = (Value(1.0, label="a") * 2 + 1).tanh()
    with pytest.raises(GraphTooLargeError) as info:
        draw_dot(root, max_nodes=1)
    message = str(info.value)
    assert message.startswith("the graph has 4 rows, 7 nodes to draw: more than "
                              "max_nodes=1. Options:")
    assert "collapse=None, max_nodes=7 to draw it anyway" in message
    with pytest.raises(GraphTooLargeError, match="more than max_edges=1"):
        draw_dot(root, max_edges=1, collapse=None)


# ---------------------------------------------------------------------------------------
# constants=True: micrograd's node for node
# ---------------------------------------------------------------------------------------

def micrograd_counts(root) -> tuple[int, int]:
    """Nodes and edges of micrograd's own draw_dot: a record per Value, an op node per
    Value with an op, edges child -> op (``_prev`` is a set) and op -> Value."""
    seen, links, stack = set(), set(), [root]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        for child in v._prev:
            links.add((child, v))
            stack.append(child)
    ops = sum(1 for v in seen if v._op)
    return len(seen) + ops, len(links) + ops


def expressions(V):
    """Expressions without - and / (tapegrad records a - b as one row, micrograd as
    a + (-b)), with constants on either side, x * x, ** and relu."""
    a, b, c = V(2.0), V(-3.0), V(10.0)
    d = a * b + c
    yield d
    yield (d * 2 + 1).relu() * a + 3 * b + (a * a) ** 2 + 1 + c
    yield 2 * (a + 1) * (b * 0.5 + c) ** 3
    xs = [V(0.1 * i) for i in range(5)]
    ws = [V(0.2 * i - 0.3) for i in range(5)]
    yield sum((w * x for w, x in zip(ws, xs)), V(0.5)).relu()
    yield sum(w * x for w, x in zip(ws, xs))              # starts from the int 0: 0 + w*x


def test_constants_true_matches_micrograds_graph_node_for_node():
    micrograd = pytest.importorskip("micrograd.engine")
    with Tape():
        ours = list(expressions(Value))
    theirs = list(expressions(micrograd.Value))
    for mine, ref in zip(ours, theirs):
        assert mine.data == pytest.approx(ref.data)
        g = draw_dot(mine, constants=True)
        parsed = parse(g.source)
        assert (len(nodes(parsed)), len(edges(parsed))) == micrograd_counts(ref)
        assert (g.node_count, g.edge_count) == micrograd_counts(ref)


def test_constants_become_grey_value_nodes_and_pow_keeps_its_exponent():
    with Tape():
        x = Value(2.0, label="x")
        y = (x * 3 + 1) ** 2
    found = nodes(parse(draw_dot(y, constants=True).source))
    ops = sorted(n.get_attributes()["label"].strip('"') for k, n in found.items()
                 if k.startswith("o"))
    assert ops == ["*", "**2", "+"]
    consts = {k: n.get_attributes() for k, n in found.items() if k.startswith("k")}
    assert sorted(a["label"] for a in consts.values()) == [
        '"{  | data 1.0000 | constant }"', '"{  | data 3.0000 | constant }"']
    assert all(a["color"] == "grey" for a in consts.values())
    assert sorted(edges(parse(draw_dot(y, constants=True).source))) == sorted(
        [("v0", "o1"), ("k1", "o1"), ("o1", "v1"), ("v1", "o2"), ("k2", "o2"),
         ("o2", "v2"), ("v2", "o3"), ("o3", "v3")])


# ---------------------------------------------------------------------------------------
# characters DOT rejects
# ---------------------------------------------------------------------------------------

ODD = ["nul\x00", "soh\x01", "two\nlines", 'quote"', "back\\slash", "<lt", "gt>", "{brace",
       "brace}", "bar|", "emoji 🎉", "esc\x1b del\x7f c1\x85", "tab\tcr\r", "lone \udc80"]


def odd_tape() -> tuple[Tape, Value]:
    with Tape() as t:
        with scope("sc\x00ope|{x}"):
            total = Value(0.0, label="start")
            for i, label in enumerate(ODD):
                v = Value(float(i), label=label) * 2.0
                v.label = label + " out"
                total = total + v
        total.label = "total\x00"
    total.backward()
    return t, total


def test_control_characters_and_surrogates_become_visible_text():
    t, total = odd_tape()
    text = draw_dot(total).source
    assert "\x00" not in text and "\x01" not in text and "\x7f" not in text
    assert "␀" in text and "␁" in text and "␛" in text and "␡" in text
    assert "\\\\x85" in text and "\\\\udc80" in text and "🎉" in text
    text.encode("utf-8")                                    # no lone surrogate left
    names = {n.get_attributes()["label"] for n in nodes(parse(text)).values()}
    assert '"{ nul␀ | data 0.0000 | grad 2.0000 }"' in names
    assert t.labels[total.row] == "total\x00"               # the tape keeps it exact


@needs_dot
@pytest.mark.parametrize("options", [{}, {"collapse": "chains"}, {"collapse": "levels"},
                                     {"clusters": False}, {"constants": True}])
def test_odd_labels_render_through_graphviz(tmp_path, options):
    t, total = odd_tape()
    g = draw_dot(total, **options)
    parse(g.source)
    assert "<svg" in g.pipe("svg").decode("utf-8")


@needs_dot
def test_odd_labels_export_and_render_through_graphviz(tmp_path):
    t, total = odd_tape()
    path = tmp_path / "odd.dot"
    assert export_dot(t, path) == len(t)
    text = path.read_text(encoding="utf-8")
    assert "\x00" not in text
    assert len(nodes(parse(text))) == len(t)
    svg = viz.DotGraph(parse(text)).pipe("svg")
    assert b"<svg" in svg and "nul␀".encode() in svg


# ---------------------------------------------------------------------------------------
# timeouts
# ---------------------------------------------------------------------------------------

def test_a_slow_dot_is_stopped_with_advice(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "exec sleep 30")
    g = draw_dot(small())
    with pytest.raises(GraphvizTimeoutError) as info:
        g.pipe("svg", timeout=0.2)
    assert isinstance(info.value, GraphvizError)
    message = str(info.value)
    assert message.startswith("Graphviz did not finish laying out 7 nodes and 6 edges "
                              "within 0.2 s")
    for part in ("save_dot(g, 'x.dot')", "lower max_nodes", "collapse='levels'"):
        assert part in message
    with pytest.raises(GraphvizTimeoutError):
        save_dot(g, tmp_path / "x.svg", timeout=0.2)
    assert not (tmp_path / "x.svg").exists()
    with pytest.raises(GraphvizTimeoutError):
        g.render("r", directory=tmp_path, timeout=0.2)
    with pytest.raises(GraphvizTimeoutError):
        save_dot(small(), tmp_path / "y.png", timeout=0.2)
    assert "no picture: Graphviz did not finish" in \
        _display_with_timeout(g, monkeypatch)["text/plain"]


def _display_with_timeout(g: DotGraph, monkeypatch) -> dict:
    real = DotGraph.pipe                                    # the display's default: 60 s
    monkeypatch.setattr(DotGraph, "pipe", lambda self, fmt=None, **kw: real(
        self, fmt, timeout=0.2))
    return g._repr_mimebundle_()


def test_timeouts_must_be_positive_numbers_or_none(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, 'printf "<svg/>"')
    g = draw_dot(small())
    assert g.pipe(timeout=None) == b"<svg/>" and g.pipe(timeout=5) == b"<svg/>"
    for bad, error in ((0, ValueError), (-1.0, ValueError), ("5", TypeError),
                       (True, TypeError)):
        with pytest.raises(error, match="timeout must be"):
            g.pipe(timeout=bad)


def test_a_failing_dot_reports_its_stderr(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, 'echo "syntax error in line 1" >&2; exit 1')
    with pytest.raises(GraphvizError, match=re.escape("exit status 1) rendering svg: "
                                                      "syntax error in line 1")):
        draw_dot(small()).pipe()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="looks up xdg-open")
def test_view_without_a_viewer_says_so(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, 'printf "<svg/>"')
    monkeypatch.setenv("PATH", str(tmp_path / "fakebin"))   # dot, but no xdg-open
    with pytest.raises(RuntimeError, match="view=True needs"):
        draw_dot(small()).render("v", directory=tmp_path, view=True)
    assert (tmp_path / "v.svg").read_bytes() == b"<svg/>"
