"""tapegrad.viz: DOT pictures in micrograd's look, views for large tapes, streaming export.

Every graph is parsed back with pydot and checked against the tape; rendering tests
run only where Graphviz's ``dot`` program is installed.
"""

from __future__ import annotations

import random
import re
import shutil
import sys

import pytest

from tapegrad import Tape, Value, scope, viz
from tapegrad.viz import (
    GraphTooLargeError,
    GraphvizError,
    GraphvizNotFoundError,
    draw_dot,
    export_dot,
    render_dot,
    save_dot,
)

pydot = pytest.importorskip("pydot")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed")

_PSEUDO = {"node", "edge", "graph"}   # default-attribute statements, not nodes


# ---------------------------------------------------------------------------------------
# helpers: parse DOT back and walk it
# ---------------------------------------------------------------------------------------

def parse(text: str) -> pydot.Dot:
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, "pydot could not parse the DOT text"
    return graphs[0]


def nodes(graph: pydot.Graph) -> dict[str, pydot.Node]:
    """Every node of ``graph`` and its subgraphs, by name."""
    found = {n.get_name(): n for n in graph.get_nodes() if n.get_name() not in _PSEUDO}
    for sub in graph.get_subgraphs():
        found.update(nodes(sub))
    return found


def edges(graph: pydot.Graph) -> list[tuple[str, str]]:
    found = [(e.get_source(), e.get_destination()) for e in graph.get_edges()]
    for sub in graph.get_subgraphs():
        found += edges(sub)
    return found


def attr(node: pydot.Node | pydot.Graph, key: str) -> str | None:
    value = node.get_attributes().get(key)
    return value.strip('"') if isinstance(value, str) else value


def fields(node: pydot.Node) -> list[str]:
    """The fields of a record label, unescaped: ``{ a | data 1 }`` -> ["a", "data 1"]."""
    text = attr(node, "label")
    assert text.startswith("{ ") and text.endswith(" }"), text
    parts = re.split(r"(?<!\\) \| ", text[2:-2])
    return [re.sub(r"\\(.)", r"\1", p) for p in parts]


def lines(node: pydot.Node) -> list[str]:
    """The lines of a summary node's label."""
    return attr(node, "label").split("\\n")


def drawn(root, **options) -> pydot.Dot:
    return parse(render_dot(root, **options))


def trace(root: Value) -> tuple[set[int], set[tuple[int, int]]]:
    """micrograd's ``trace``: rows and (operand, result) edges, walked through ``_prev``."""
    seen, links, stack = set(), set(), [root]
    while stack:
        v = stack.pop()
        if v.row in seen:
            continue
        seen.add(v.row)
        for p in v._prev:
            links.add((p.row, v.row))
            stack.append(p)
    return seen, links


def micrograd_expression() -> tuple[Tape, Value, Value, Value]:
    with Tape() as t:
        a = Value(5.0, label="a")
        b = 35.0 + a.pow(-3.0) / -1.5
        b.label = "b"
        c = b.relu()
        c.label = "c"
    c.backward()
    return t, a, b, c


def chain(n: int, label: str = "x") -> tuple[Tape, Value, list[Value]]:
    """``x = x * 1.0001 + 1e-4`` recorded ``n`` times: ``2 n + 1`` rows."""
    with Tape() as t:
        x = Value(1.0, label=label)
        steps = [x]
        for _ in range(n):
            x = x * 1.0001 + 1e-4
            steps.append(x)
    x.backward()
    return t, x, steps


def layered(seed: int = 0, width: int = 6, layers: int = 4) -> tuple[Tape, Value]:
    """A random DAG with fan-out, shared operands, x*x and immediates."""
    rng = random.Random(seed)
    with Tape() as t:
        prev = [Value(rng.uniform(-1, 1)) for _ in range(width)]
        for _ in range(layers):
            cur = []
            for _ in range(width):
                a, b = rng.choice(prev), rng.choice(prev)
                kind = rng.randrange(5)
                cur.append(a * b if kind == 0 else a + b if kind == 1 else a * a
                           if kind == 2 else (a * 0.5).relu() if kind == 3 else 1 - a)
            prev = cur
        root = sum(prev[1:], prev[0])
    root.backward()
    return t, root


def scoped_mlp() -> tuple[Tape, Value]:
    """Two layers of neurons, each recorded inside ``scope("layerI")/scope("neuronJ")``."""
    rng = random.Random(1)
    with Tape() as t:
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
    return t, loss


# ---------------------------------------------------------------------------------------
# micrograd's look
# ---------------------------------------------------------------------------------------

def test_micrograd_expression_has_records_op_nodes_and_edges():
    t, a, b, c = micrograd_expression()
    g = drawn(c)
    found = nodes(g)
    assert len(found) == 5 + 4              # a value node per row, an op node per non-leaf
    assert len(edges(g)) == 4 + 4           # operand -> op, op -> result
    assert fields(found[f"v{a.row}"]) == ["a", f"data {a.data:.4f}", f"grad {a.grad:.4f}"]
    assert fields(found[f"v{c.row}"]) == ["c", "data 34.9947", "grad 1.0000"]
    assert attr(found[f"v{c.row}"], "shape") == "record"
    ops = sorted(attr(n, "label") for name, n in found.items() if name.startswith("o"))
    assert ops == sorted(["**-3", "/ -1.5", "+ 35", "ReLU"])
    assert (f"v{b.row}", f"o{c.row}") in edges(g) and (f"o{c.row}", f"v{c.row}") in edges(g)
    assert attr(g, "rankdir") == "LR"


def test_every_value_label_carries_data_and_grad():
    t, root = layered()
    g = drawn(root)
    values, grads = t.values, t.grads
    for name, node in nodes(g).items():
        if name.startswith("v"):
            row = int(name[1:])
            assert fields(node)[1:] == [f"data {values[row]:.4f}", f"grad {grads[row]:.4f}"]


def test_node_and_edge_counts_match_micrograds_trace():
    t, root = layered(seed=3)
    rows, links = trace(root)
    inner = [r for r in rows if t.levels[r] > 0]
    g = drawn(root)
    assert len(nodes(g)) == len(rows) + len(inner)
    assert len(edges(g)) == len(links) + len(inner)   # shared operands (a * a) draw one edge
    assert {n for n in nodes(g) if n.startswith("v")} == {f"v{r}" for r in rows}


def test_ops_show_their_immediate_constants():
    with Tape():
        x = Value(2.0)
        exprs = {"* 3": x * 3, "+ 1": x + 1, "**2": x ** 2, "2**": 2 ** x, "1 /": 1 / x,
                 "1 -": 1 - x, "- 0.5": x - 0.5, "tanh": x.tanh(), "neg": -x, "*": x * x}
    for text, value in exprs.items():
        ops = [attr(n, "label") for name, n in nodes(drawn(value)).items()
               if name.startswith("o")]
        assert ops == [text]


def test_a_leaf_draws_one_node_and_an_empty_tape_none():
    with Tape() as t:
        x = Value(1.5, label="x")
    g = drawn(x)
    assert list(nodes(g)) == [f"v{x.row}"] and edges(g) == []
    assert nodes(drawn(Tape())) == {}
    assert len(nodes(drawn(t))) == 1


def test_a_tape_draws_all_its_rows_not_only_the_ancestors():
    with Tape() as t:
        x = Value(1.0)
        y = x * 2.0
        z = x + 1.0   # not an ancestor of y
    assert set(nodes(drawn(y))) == {"v0", "v1", "o1"}
    assert set(nodes(drawn(t))) == {"v0", "v1", "o1", "v2", "o2"}
    assert z.row == 2


def test_labels_with_special_characters_are_escaped():
    with Tape():
        x = Value(1.0, label='a{b}|"c"<d>\\e')
        y = (x * 2.0) + 1.0
        y.label = "two\nlines"
    found = nodes(drawn(y))
    assert fields(found[f"v{x.row}"])[0] == 'a{b}|"c"<d>\\e'
    assert attr(found[f"v{y.row}"], "label").startswith("{ two\\nlines |")   # a \n escape


def test_root_is_highlighted_and_rankdir_is_passed_on():
    t, a, b, c = micrograd_expression()
    g = drawn(c, rankdir="TB")
    assert attr(g, "rankdir") == "TB"
    assert attr(nodes(g)[f"v{c.row}"], "penwidth") == "2"
    assert attr(nodes(g)[f"v{b.row}"], "penwidth") is None


def test_render_dot_is_the_text_of_draw_dot():
    t, a, b, c = micrograd_expression()
    graph = draw_dot(c)
    assert render_dot(c) == graph.to_string() == graph.source == str(graph)
    assert isinstance(graph, viz.DotGraph) and isinstance(graph.pydot, pydot.Dot)


# ---------------------------------------------------------------------------------------
# clusters from name scopes
# ---------------------------------------------------------------------------------------

def clusters(graph: pydot.Graph, prefix: str = "") -> dict[str, set[str]]:
    """Scope path of each cluster (from nested labels) -> names of the nodes directly in it."""
    found = {}
    for sub in graph.get_subgraphs():
        assert sub.get_name().startswith("cluster")
        path = f"{prefix}/{attr(sub, 'label')}" if prefix else attr(sub, "label")
        found[path] = {n.get_name() for n in sub.get_nodes() if n.get_name() not in _PSEUDO}
        found.update(clusters(sub, path))
    return found


def test_scopes_become_nested_clusters():
    t, loss = scoped_mlp()
    g = drawn(loss)
    found = clusters(g)
    assert set(found) == {"layer1", "layer2", *(f"layer1/neuron{j}" for j in range(3)),
                          *(f"layer2/neuron{j}" for j in range(2))}
    assert found["layer1"] == set() and found["layer2"] == set()   # nodes sit in neurons
    for path, names in found.items():
        for name in names:
            assert t.scope_of(int(name[1:])) == path
    for sub in g.get_subgraphs():
        assert attr(sub, "tooltip") == attr(sub, "label")
    assert len(nodes(g)) == len(trace(loss)[0]) + sum(t.levels[r] > 0 for r in trace(loss)[0])


def test_clusters_can_be_turned_off():
    t, loss = scoped_mlp()
    g = drawn(loss, clusters=False)
    assert g.get_subgraphs() == []
    assert len(nodes(g)) == len(nodes(draw_dot(loss)))


# ---------------------------------------------------------------------------------------
# large tapes: the cap, neighbourhoods, collapsing
# ---------------------------------------------------------------------------------------

def test_the_node_cap_names_the_size_and_the_options():
    t, x, _ = chain(150)                     # 301 rows: 601 nodes
    with pytest.raises(GraphTooLargeError) as info:
        draw_dot(x, collapse=None, max_nodes=500)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for part in ("301 rows", "601 nodes", "max_nodes=500", "around=", "collapse=",
                 "export_dot"):
        assert part in message
    assert len(nodes(draw_dot(x, max_nodes=601))) == 601
    with pytest.raises(GraphTooLargeError, match="601 nodes"):
        draw_dot(x, max_nodes=600, collapse=None)


def test_the_cap_applies_to_the_collapsed_graph():
    t, x, _ = chain(1000)
    g = drawn(x, collapse="chains", max_nodes=2)
    assert len(nodes(g)) == 2
    with pytest.raises(GraphTooLargeError, match="2 nodes"):
        draw_dot(x, collapse="chains", max_nodes=1)


def test_neighbourhood_holds_the_rows_within_depth_hops_both_ways():
    t, x, steps = chain(50)
    mid = steps[20].row                      # rows: 0 leaf, then one row per op
    for depth in (0, 1, 3):
        g = drawn(x, around=steps[20], depth=depth)
        values = {int(n[1:]) for n in nodes(g) if n.startswith("v")}
        assert values == set(range(mid - depth, mid + depth + 1))
    dashed = {n for n, node in nodes(drawn(x, around=steps[20], depth=2)).items()
              if attr(node, "style") == "dashed"}
    # dashed: the op whose operand is not drawn, the value whose consumer is not drawn
    assert dashed == {f"o{mid - 2}", f"v{mid + 2}"}


def test_neighbourhood_follows_fan_out_and_operands():
    with Tape() as t:
        a, b = Value(1.0), Value(2.0)
        s = a * b                 # row 2
        u, v, w = s + 1, s * 2, s.relu()   # rows 3, 4, 5: consumers of s
        far = (u + v) * w         # rows 6, 7
    g = drawn(far, around=s, depth=1)
    assert {n for n in nodes(g) if n.startswith("v")} == {f"v{r}" for r in range(6)}
    g = drawn(t, around=s, depth=2)
    assert {n for n in nodes(g) if n.startswith("v")} == {f"v{r}" for r in range(8)}
    assert far.row == 7


def drawn_rows(g: pydot.Dot) -> int:
    """Rows a picture stands for: collapsed nodes count their ``rows``, value nodes one."""
    total = 0
    for name, node in nodes(g).items():
        if attr(node, "rows") is not None:
            total += int(attr(node, "rows"))
        elif name.startswith("v"):
            total += 1
    return total


def test_chains_collapse_into_one_node_with_a_count():
    t, x, _ = chain(1000)
    g = drawn(x, collapse="chains")
    found = nodes(g)
    assert set(found) == {"v0", "c1"}
    assert attr(found["c1"], "rows") == str(len(t) - 1)
    assert lines(found["c1"]) == ["2000 rows: * ×1000, + ×1000", f"data {x.data:.4f}",
                                  "grad 1.0000"]
    assert edges(g) == [("v0", "c1")]
    assert drawn_rows(g) == len(t)


@pytest.mark.parametrize("collapse", ["chains", "trees", "levels"])
@pytest.mark.parametrize("clusters_on", [True, False])
def test_collapsed_counts_add_up_to_the_rows_drawn(collapse, clusters_on):
    for t, root in (layered(seed=5, width=8, layers=6), scoped_mlp()):
        rows, _ = trace(root)
        g = draw_dot(root, collapse=collapse, clusters=clusters_on)   # no parsing: faster
        assert drawn_rows(g) == len(rows)
        assert drawn_rows(draw_dot(t, collapse=collapse, clusters=clusters_on)) == len(t)
    assert drawn_rows(drawn(root, collapse=collapse, clusters=clusters_on)) == len(rows)


def test_trees_merge_each_neuron_into_one_node():
    t, loss = scoped_mlp()
    g = drawn(loss, collapse="trees")
    found = nodes(g)
    singles = {fields(found[n])[0] or n for n in found if n.startswith("v")}
    assert singles == {"x0", "x1", f"v{loss.row}"}     # labelled inputs are kept, and the
    # loss (outside any scope) does not merge the neurons of layer2 in
    merged = {path: names for path, names in clusters(g).items() if names}
    assert set(merged) == {f"layer1/neuron{j}" for j in range(3)} | \
        {f"layer2/neuron{j}" for j in range(2)}
    for names in merged.values():
        (name,) = names                                      # one node per neuron
        size = int(attr(found[name], "rows"))
        assert lines(found[name])[0].startswith(f"{size} rows: leaf ×")
    assert drawn_rows(g) == len(t)
    # without scopes to split them, layer2 merges into the loss; layer1 outputs fan out
    assert len(nodes(drawn(loss, collapse="trees", clusters=False))) == 2 + 3 + 1


def test_levels_coalesce_rows_by_opcode_and_level():
    with Tape() as t:
        xs = [Value(float(i)) for i in range(10)]
        prods = [x * 2.0 for x in xs]          # level 1: ten multiplies
        total = sum(prods[1:], prods[0])       # levels 2..10: a chain of adds
    g = drawn(total, collapse="levels")
    found = nodes(g)
    leaf, mul = found["g0"], found[f"g{prods[0].row}"]
    assert attr(leaf, "rows") == "10" and lines(leaf)[0] == "leaf ×10, level 0"
    assert attr(mul, "rows") == "10" and lines(mul)[:2] == ["* ×10, level 1",
                                                            "data 0.0000 … 18.0000"]
    assert attr(mul, "shape") == "box"
    assert ("g0", f"g{prods[0].row}") in edges(g)
    assert attr(g.get_edge("g0", f"g{prods[0].row}")[0], "label") == "×10"
    assert drawn_rows(g) == len(t)


def test_levels_split_by_scope_when_clusters_are_on():
    t, loss = scoped_mlp()
    g = drawn(loss, collapse="levels")
    for path, names in clusters(g).items():
        for name in names:
            assert name[0] in "vog" and t.scope_of(int(name[1:])) == path
    assert len(nodes(draw_dot(loss, collapse="levels", clusters=False))) < len(nodes(g))


def test_chains_keep_labelled_rows_visible():
    with Tape():
        x = Value(1.0, label="x")
        y = (x * 2.0).relu()
        y.label = "y"
        z = (y + 1.0).tanh().exp()
    g = drawn(z, collapse="chains")
    found = nodes(g)
    assert lines(found[f"c{y.row - 1}"])[0] == "y"           # a chain ending at y
    assert attr(found[f"c{y.row - 1}"], "rows") == "2"
    assert attr(found[f"c{y.row + 1}"], "rows") == "3"
    assert drawn_rows(g) == 6


# ---------------------------------------------------------------------------------------
# streaming export
# ---------------------------------------------------------------------------------------

def test_export_dot_writes_one_node_per_row_and_an_edge_per_operand(tmp_path):
    t, a, b, c = micrograd_expression()
    with Tape():
        Value(9.0)                            # another tape: not exported
    path = tmp_path / "small.dot"
    assert export_dot(t, path) == len(t)
    g = parse(path.read_text())
    found = nodes(g)
    assert set(found) == {f"r{r}" for r in range(len(t))}
    args = t.args
    expected = sorted((f"r{a_}", f"r{r}") for r in range(len(t)) for a_ in args[r] if a_ >= 0)
    assert sorted(edges(g)) == expected
    assert fields(found[f"r{a.row}"]) == ["a", "data 5", "grad 0.0032"]
    assert fields(found[f"r{c.row}"])[0] == "c: ReLU"
    assert fields(found["r1"])[0] == "**-3"


def test_export_dot_of_a_value_writes_its_ancestors(tmp_path):
    with Tape():
        x = Value(1.0)
        y = x * 2.0
        x + 1.0                               # not an ancestor of y
    path = tmp_path / "y.dot"
    assert export_dot(y, path) == 2
    assert set(nodes(parse(path.read_text()))) == {"r0", "r1"}


def test_export_dot_of_a_larger_tape_counts_lines(tmp_path):
    t, x, _ = chain(5000)
    path = tmp_path / "chain.dot"
    assert export_dot(t, path, chunk_rows=999) == len(t)   # chunks that do not divide it
    lines = path.read_text().splitlines()
    header, footer = 3, 1
    assert len(lines) == header + len(t) + (len(t) - 1) + footer
    assert lines[-1] == "}" and lines[3].startswith("r0 [label=")
    assert sum(bool(re.match(r"r\d+ \[label=", line)) for line in lines) == len(t)


# ---------------------------------------------------------------------------------------
# saving and rendering
# ---------------------------------------------------------------------------------------

def test_save_dot_writes_text_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # no dot program to be found
    t, a, b, c = micrograd_expression()
    path = save_dot(c, tmp_path / "expr.dot")
    assert path.read_text() == render_dot(c)
    graph = draw_dot(c, format="dot")
    assert save_dot(graph, tmp_path / "noext") == tmp_path / "noext.dot"


def test_missing_dot_program_raises_a_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    t, a, b, c = micrograd_expression()
    with pytest.raises(GraphvizNotFoundError) as info:
        save_dot(c, tmp_path / "expr.svg")
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, GraphvizError)
    for part in ("'dot' program", "apt-get install graphviz", "brew install graphviz",
                 "conda install graphviz", "dnf install graphviz", "winget install graphviz"):
        assert part in str(info.value)
    assert not (tmp_path / "expr.svg").exists()


@needs_dot
def test_save_dot_renders_svg_png_and_pdf(tmp_path):
    t, a, b, c = micrograd_expression()
    svg = save_dot(c, tmp_path / "expr.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "<svg" in svg
    assert "ReLU" in svg and "data 34.9947" in svg
    assert save_dot(draw_dot(c), tmp_path / "expr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_dot(c, tmp_path / "expr.pdf").read_bytes()[:5] == b"%PDF-"
    assert save_dot(c, tmp_path / "expr").suffix == ".svg"      # draw_dot's format


@needs_dot
def test_graphviz_renders_clusters_collapsed_nodes_and_escaped_labels(tmp_path):
    t, loss = scoped_mlp()
    with Tape():
        odd = Value(1.0, label='a{b}|"c"<d>\\') * 2.0
    for root, options in ((loss, {}), (loss, {"collapse": "levels"}),
                          (loss, {"collapse": "chains"}), (odd, {})):
        svg = save_dot(root, tmp_path / "g.svg", **options).read_text()
        assert "<svg" in svg


def test_save_dot_rejects_unknown_extensions_and_bad_arguments(tmp_path):
    t, a, b, c = micrograd_expression()
    with pytest.raises(ValueError, match=r"'\.jpg'.*\.dot, \.gv, \.svg, \.png, \.pdf"):
        save_dot(c, tmp_path / "expr.jpg")
    with pytest.raises(TypeError, match="file path"):
        save_dot(c, 42)
    with pytest.raises(TypeError, match="already drawn"):
        save_dot(draw_dot(c), tmp_path / "x.dot", collapse="chains")


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------

def test_bad_roots_and_options_raise_specific_errors(tmp_path):
    t, a, b, c = micrograd_expression()
    with pytest.raises(TypeError, match="tapegrad Value or Tape, got float"):
        draw_dot(1.0)
    with pytest.raises(TypeError, match="tapegrad Value or Tape, got list"):
        export_dot([c], tmp_path / "x.dot")
    cases = [
        ({"depth": -1}, ValueError, "depth must be >= 0, got -1"),
        ({"depth": 1.5}, TypeError, "depth must be an int"),
        ({"max_nodes": 0}, ValueError, "max_nodes must be >= 1"),
        ({"max_nodes": True}, TypeError, "max_nodes must be an int"),
        ({"max_edges": 0}, ValueError, "max_edges must be >= 1"),
        ({"max_edges": 2.0}, TypeError, "max_edges must be an int"),
        ({"collapse": "all"}, ValueError,
         "collapse must be one of 'auto', None, 'chains', 'trees', 'levels'"),
        ({"rankdir": "XY"}, ValueError, "rankdir must be one of"),
        ({"format": "jpg"}, ValueError, "format must be one of"),
        ({"around": 3.0}, TypeError, "around must be a tapegrad Value, got float"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            draw_dot(c, **options)
    with Tape(name="other"):
        elsewhere = Value(1.0) * 2.0
    with pytest.raises(ValueError, match="around is on tape 'other'"):
        draw_dot(c, around=elsewhere)
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        export_dot(t, tmp_path / "x.dot", chunk_rows=0)


def test_pydot_is_imported_only_when_drawing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)      # import pydot now fails
    t, a, b, c = micrograd_expression()
    with pytest.raises(ImportError, match=re.escape('pip install "tapegrad[viz]"')):
        draw_dot(c)
    assert "pydot" not in vars(viz)
