"""Pictures of the tape: micrograd's ``draw_dot`` on pydot, and views that scale.

``draw_dot(root)`` draws the ancestors of ``root`` the way micrograd does: one record
node ``{ label | data | grad }`` per Value, one small node per op (immediate constants
inside it: ``* 3``, ``+ 1``, ``**2``), edges operand -> op -> result. Rows recorded
inside :class:`tapegrad.scope` blocks are drawn in nested clusters.

Graphviz takes seconds to lay out a thousand nodes and many minutes for a few thousand,
and pydot keeps an object per node and edge, so ``draw_dot`` counts the nodes first,
refuses graphs of more than ``max_nodes`` and offers smaller views:

* ``around=value, depth=k``: only the rows within ``k`` hops of ``value``;
* ``collapse="chains"``: each chain of rows with one operand and one consumer becomes
  one node;
* ``collapse="trees"``: each row with a single consumer joins its consumer's node, so
  an expression tree (a neuron's products, sums and activation) becomes one node;
* ``collapse="levels"``: rows with the same opcode, level (and scope) become one node.

Collapsed nodes carry the number of rows they stand for (in their label and in a
``rows`` attribute), so the counts add up to the rows drawn. ``export_dot`` streams a
whole tape (10^6 rows in seconds) to a DOT file without building a graph in memory.

pydot is imported when a function needs it: ``pip install -e '.[viz]'``. Rendering
(``save_dot`` to ``.svg``/``.png``/``.pdf``) runs Graphviz's ``dot`` program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .engine import Value
from .ops import OPS, POW
from .tape import Tape

if TYPE_CHECKING:  # pragma: no cover
    import pydot

__all__ = [
    "draw_dot", "render_dot", "save_dot", "export_dot",
    "GraphTooLargeError", "GraphvizError", "GraphvizNotFoundError",
    "DEFAULT_MAX_NODES", "SAVE_FORMATS",
]

DEFAULT_MAX_NODES = 500
"""``draw_dot`` refuses larger graphs unless given ``max_nodes``."""

SAVE_FORMATS: dict[str, str] = {".dot": "dot", ".gv": "dot", ".svg": "svg",
                                ".png": "png", ".pdf": "pdf"}
"""File extensions :func:`save_dot` understands, and the format each one writes."""

_RANKDIRS = ("LR", "TB", "RL", "BT")
_COLLAPSE = (None, "chains", "trees", "levels")
_SUMMARY_STYLE = {"shape": "box", "style": '"rounded,filled"', "fillcolor": '"#eeeeee"'}
_INSTALL_GRAPHVIZ = ("apt-get install graphviz (Debian/Ubuntu), brew install graphviz "
                     "(macOS), conda install graphviz, or see https://graphviz.org/download/")


class GraphTooLargeError(ValueError):
    """The graph to draw has more nodes than ``max_nodes``."""


class GraphvizError(RuntimeError):
    """Graphviz's ``dot`` program failed to render a graph."""


class GraphvizNotFoundError(GraphvizError):
    """Graphviz's ``dot`` program is not installed (not on ``PATH``)."""


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------

def draw_dot(root: Value | Tape, format: str = "svg", rankdir: str = "LR", *,
             max_nodes: int = DEFAULT_MAX_NODES, around: Value | None = None,
             depth: int = 2, collapse: str | None = None,
             clusters: bool = True) -> pydot.Dot:
    """The graph of ``root`` as a ``pydot.Dot``, in micrograd's look.

    Args:
        root: a Value (its ancestors are drawn, like micrograd's ``trace``) or a Tape
            (all of its rows).
        format: the format :func:`save_dot` writes when its path has no extension
            (``"svg"``, ``"png"``, ``"pdf"`` or ``"dot"``).
        rankdir: ``"LR"`` (left to right, micrograd's default), ``"TB"``, ``"RL"``, ``"BT"``.
        max_nodes: refuse (:class:`GraphTooLargeError`) to build a larger graph.
        around: draw only the rows within ``depth`` hops of this Value (operands and
            consumers, on ``root``'s tape). Rows with edges to rows left out are dashed.
        depth: the number of hops for ``around`` (an int >= 0).
        collapse: ``None``; ``"chains"`` to draw each chain of rows with one consumer
            and one operand as one node; ``"trees"`` to merge every row with a single
            consumer into that consumer's node; ``"levels"`` to draw the rows of one
            opcode and level (and scope) as one node. Labelled rows are never merged
            into another node.
        clusters: draw rows recorded in :class:`tapegrad.scope` blocks in (nested) clusters.
    """
    pydot = _import_pydot()
    graph_format = _check_choice("format", format, ("svg", "png", "pdf", "dot"))
    _check_choice("rankdir", rankdir, _RANKDIRS)
    _check_choice("collapse", collapse, _COLLAPSE)
    _check_int("max_nodes", max_nodes, minimum=1)
    _check_int("depth", depth, minimum=0)
    tape, root_row = _resolve(root, "draw_dot")
    frame = _Frame.of(tape)
    if around is None:
        rows = _ancestors(frame, root_row) if root_row is not None else np.arange(frame.n)
    else:
        rows = _neighbourhood(frame, _around_row(around, tape), depth)
    sub = _Sub.of(frame, rows, check_cut=around is not None)
    groups = _group(frame, sub, collapse, split_scopes=clusters)
    _check_size(groups, sub, frame, max_nodes, collapse, around, depth)
    plan = _plan(frame, sub, groups, collapse, root_row)
    graph = _to_pydot(pydot, plan, frame.scope_names if clusters else None, rankdir)
    graph._tapegrad_format = graph_format
    return graph


def render_dot(root: Value | Tape, rankdir: str = "LR", **options: Any) -> str:
    """The DOT source of ``draw_dot(root, rankdir=rankdir, **options)``."""
    return draw_dot(root, rankdir=rankdir, **options).to_string()


def save_dot(graph: pydot.Dot | Value | Tape, path: str | os.PathLike[str],
             **options: Any) -> Path:
    """Write a graph to ``path``, in the format its extension names; returns the path.

    ``graph`` is a ``pydot.Dot`` from :func:`draw_dot`, or a Value or Tape drawn with
    ``draw_dot(graph, **options)``. ``.dot``/``.gv`` write the DOT text; ``.svg``,
    ``.png`` and ``.pdf`` run Graphviz's ``dot`` program (:class:`GraphvizNotFoundError`
    when it is not installed). A path without extension gets the graph's ``format``.
    """
    pydot = _import_pydot()
    if not isinstance(graph, pydot.Dot):
        graph = draw_dot(graph, **options)
    elif options:
        raise TypeError(f"save_dot got drawing options {sorted(options)} with a graph "
                        "that is already drawn; pass a Value or Tape to draw it with them")
    path = _check_path(path, "save_dot")
    if not path.suffix:
        path = path.with_suffix("." + getattr(graph, "_tapegrad_format", "svg"))
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_dot cannot write {path.suffix!r} files ({path}); "
                         f"supported extensions: {', '.join(SAVE_FORMATS)}")
    text = graph.to_string()
    if fmt == "dot":
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(_run_dot(text, fmt))
    return path


def export_dot(source: Value | Tape, path: str | os.PathLike[str], *,
               rankdir: str = "LR", chunk_rows: int = 1 << 14) -> int:
    """Stream the rows of a tape to a DOT file, one node per row; returns rows written.

    ``source`` is a Tape (every row) or a Value (its ancestors). Each row becomes a
    record ``{ op | data | grad }`` named ``r<row>`` (leaves show their label, or
    ``leaf``), with an edge from each operand row. No pydot objects: the text is
    written ``chunk_rows`` rows at a time from the tape's arrays, so memory stays
    bounded and 10^6 rows take seconds. Graphviz cannot lay out such files; draw
    parts of them with :func:`draw_dot` (``around=``, ``collapse=``) instead.
    """
    _check_choice("rankdir", rankdir, _RANKDIRS)
    _check_int("chunk_rows", chunk_rows, minimum=1)
    tape, root_row = _resolve(source, "export_dot")
    path = _check_path(path, "export_dot")
    frame = _Frame.of(tape)
    rows = _ancestors(frame, root_row) if root_row is not None else None
    total = frame.n if rows is None else rows.size
    labelled = np.array(sorted(frame.labels), dtype=np.int64)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(f"digraph tapegrad {{\nrankdir={rankdir};\nnode [shape=record];\n")
        for start in range(0, total, chunk_rows):
            stop = min(start + chunk_rows, total)
            chunk = np.arange(start, stop) if rows is None else rows[start:stop]
            out.write(_export_chunk(frame, chunk, labelled))
        out.write("}\n")
    return total


# ---------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------

def _import_pydot() -> Any:
    try:
        import pydot
    except ImportError as err:
        raise ImportError("tapegrad.viz needs pydot to draw graphs: "
                          "pip install -e '.[viz]' (or pip install pydot)") from err
    return pydot


def _check_choice(name: str, value: object, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; "
                         f"got {value!r}")
    return value


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_path(path: object, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} needs a file path (str or os.PathLike), "
                        f"got {type(path).__name__}")
    return Path(path)


def _describe_type(obj: object) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else \
        f"{cls.__module__}.{cls.__qualname__}"


def _resolve(source: object, what: str) -> tuple[Tape, int | None]:
    """(tape, root row) of a Value; (tape, None) of a Tape."""
    if isinstance(source, Value):
        return source.tape, source.row
    if isinstance(source, Tape):
        return source, None
    raise TypeError(f"{what} needs a tapegrad Value or Tape, got {_describe_type(source)}")


def _around_row(around: object, tape: Tape) -> int:
    if not isinstance(around, Value):
        raise TypeError(f"around must be a tapegrad Value, got {_describe_type(around)}")
    if around.tape is not tape:
        raise ValueError(f"around is on tape {around.tape.name!r}, but the graph drawn is "
                         f"on tape {tape.name!r}")
    return around.row


# ---------------------------------------------------------------------------------------
# the tape's columns and the rows to draw
# ---------------------------------------------------------------------------------------

class _Frame(NamedTuple):
    """The tape's columns, fetched once (each Tape property builds fresh views)."""

    op: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    const: np.ndarray
    value: np.ndarray
    grad: np.ndarray
    level: np.ndarray
    scope: np.ndarray
    scope_names: tuple[str, ...]
    labels: dict[int, str]

    @classmethod
    def of(cls, tape: Tape) -> _Frame:
        args = tape.args
        return cls(tape.opcodes, args[:, 0], args[:, 1], tape.consts, tape.values,
                   tape.grads, tape.levels, tape.scope_ids, tape.scope_names, tape.labels)

    @property
    def n(self) -> int:
        return self.op.size


def _ancestors(frame: _Frame, root: int) -> np.ndarray:
    """Rows ``root`` depends on, itself included, ascending."""
    left = frame.a0[: root + 1].tolist()
    right = frame.a1[: root + 1].tolist()
    seen = bytearray(root + 1)
    seen[root] = 1
    stack = [root]
    while stack:
        r = stack.pop()
        for a in (left[r], right[r]):
            if a >= 0 and not seen[a]:
                seen[a] = 1
                stack.append(a)
    return np.flatnonzero(np.frombuffer(seen, np.uint8))


def _neighbourhood(frame: _Frame, center: int, depth: int) -> np.ndarray:
    """Rows within ``depth`` hops of ``center`` (operands and consumers), ascending."""
    a0, a1 = frame.a0, frame.a1
    near = np.zeros(frame.n, bool)
    near[center] = True
    frontier = near.copy()
    for _ in range(depth):
        step = np.zeros(frame.n, bool)
        for args in (a0[frontier], a1[frontier]):
            step[args[args >= 0]] = True                     # operands
        for args in (a0, a1):
            step |= frontier[args] & (args >= 0)             # consumers
        frontier = step & ~near
        if not frontier.any():
            break
        near |= frontier
    return np.flatnonzero(near)


class _Sub(NamedTuple):
    """The selected rows, with their operands as positions in the selection."""

    rows: np.ndarray   # ascending
    src0: np.ndarray   # position of operand 0 in ``rows``; -1 when none or not selected
    src1: np.ndarray
    cut_in: np.ndarray   # the row has an operand outside the selection
    cut_out: np.ndarray  # the row has a consumer outside the selection

    @classmethod
    def of(cls, frame: _Frame, rows: np.ndarray, check_cut: bool) -> _Sub:
        pos = np.full(frame.n + 1, -1, np.int64)   # pos[-1] stays -1 for "no operand"
        pos[rows] = np.arange(rows.size)
        a0, a1 = frame.a0[rows], frame.a1[rows]
        src0, src1 = pos[a0], pos[a1]
        cut_in = cut_out = np.zeros(rows.size, bool)
        if check_cut:
            cut_in = ((a0 >= 0) & (src0 < 0)) | ((a1 >= 0) & (src1 < 0))
            cut_out = _consumers(frame.a0, frame.a1, frame.n)[rows] > \
                _consumers(src0, src1, rows.size)
        return cls(rows, src0, src1, cut_in, cut_out)

    @property
    def m(self) -> int:
        return self.rows.size


def _consumers(a0: np.ndarray, a1: np.ndarray, n: int) -> np.ndarray:
    """How many operand slots refer to each of ``n`` rows."""
    return sum(np.bincount(a[a >= 0], minlength=n) for a in (a0, a1))


# ---------------------------------------------------------------------------------------
# collapsing: which selected rows share a node
# ---------------------------------------------------------------------------------------

class _Groups(NamedTuple):
    """A partition of the selected rows; groups of one row are drawn micrograd-style."""

    of: np.ndarray      # group of each position
    order: np.ndarray   # positions sorted by group, ascending within each group
    start: np.ndarray   # where each group's positions begin in ``order``
    size: np.ndarray    # rows in each group

    @classmethod
    def of_labels(cls, labels: np.ndarray) -> _Groups:
        _, of = np.unique(labels, return_inverse=True)
        size = np.bincount(of)
        return cls(of, np.argsort(of, kind="stable"), np.cumsum(size) - size, size)

    def members(self, g: int) -> np.ndarray:
        """Positions of group ``g``, ascending."""
        return self.order[self.start[g]: self.start[g] + self.size[g]]


def _group(frame: _Frame, sub: _Sub, collapse: str | None, split_scopes: bool) -> _Groups:
    if collapse == "levels":
        return _Groups.of_labels(_level_keys(frame, sub, split_scopes))
    if collapse in ("chains", "trees"):
        consumer, joins = _single_consumers(frame, sub, split_scopes)
        if collapse == "chains":      # only into a consumer that has no other operand
            joins &= ((sub.src0 >= 0) != (sub.src1 >= 0))[consumer]
        return _Groups.of_labels(_jump(np.where(joins, consumer, np.arange(sub.m))))
    return _Groups.of_labels(np.arange(sub.m))


def _single_consumers(frame: _Frame, sub: _Sub,
                      split_scopes: bool) -> tuple[np.ndarray, np.ndarray]:
    """(consumer, joins) per position: the position of its consumer where it has exactly
    one, and whether it may merge into that consumer: it is unlabelled (labelled rows
    stay visible) and, with scopes, a leaf or in its consumer's scope.

    Consumers come after their operands, so following ``consumer`` never cycles.
    """
    m = sub.m
    consumer = np.full(m, -1, np.int64)
    for src in (sub.src0, sub.src1):
        has = src >= 0
        consumer[src[has]] = np.flatnonzero(has)
    joins = (_consumers(sub.src0, sub.src1, m) == 1) & ~np.isin(sub.rows, list(frame.labels))
    if split_scopes:
        scope = frame.scope[sub.rows]
        joins &= (frame.level[sub.rows] == 0) | (scope[consumer] == scope)
    return consumer, joins


def _jump(parent: np.ndarray) -> np.ndarray:
    """The root of each position in a forest given by ``parent`` (roots point at
    themselves), by pointer jumping: log2(depth) vectorized rounds."""
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def _level_keys(frame: _Frame, sub: _Sub, split_scopes: bool) -> np.ndarray:
    """One int64 key per position: (scope, opcode, level)."""
    rows = sub.rows
    key = frame.op[rows].astype(np.int64) << 32 | frame.level[rows].astype(np.int64)
    if split_scopes:
        key |= frame.scope[rows].astype(np.int64) << 40
    return key


def _node_count(frame: _Frame, sub: _Sub, groups: _Groups) -> int:
    """Nodes the picture has: one per collapsed group, value + op node per other row."""
    single = groups.size == 1
    rows = sub.rows[groups.order[groups.start[single]]]
    return int((~single).sum() + single.sum() + (frame.level[rows] > 0).sum())


def _check_size(groups: _Groups, sub: _Sub, frame: _Frame, max_nodes: int,
                collapse: str | None, around: Value | None, depth: int) -> None:
    nodes = _node_count(frame, sub, groups)
    if nodes <= max_nodes:
        return
    hints = []
    if around is None:
        hints.append("draw_dot(..., around=value, depth=2) to draw the rows near one Value")
    else:
        hints.append(f"a smaller depth than {depth}")
    others = [repr(c) for c in _COLLAPSE if c is not None and c != collapse]
    hints.append(f"collapse={', '.join(others[:-1])} or {others[-1]} to merge rows into "
                 "summary nodes")
    hints.append(f"max_nodes={nodes} to draw it anyway (Graphviz struggles above a few "
                 "thousand nodes)")
    hints.append("export_dot(tape, 'graph.dot') to stream every row to a DOT file")
    raise GraphTooLargeError(
        f"the graph has {sub.m:,} rows, {nodes:,} nodes to draw: more than "
        f"max_nodes={max_nodes:,}. Options: " + "; ".join(hints) + ".")


# ---------------------------------------------------------------------------------------
# the plan: nodes and edges, independent of pydot
# ---------------------------------------------------------------------------------------

class _Node(NamedTuple):
    name: str
    attrs: dict[str, str]
    scope: int


class _Plan(NamedTuple):
    nodes: list[_Node]
    edges: list[tuple[str, str, dict[str, str]]]


def _plan(frame: _Frame, sub: _Sub, groups: _Groups, collapse: str | None,
          root: int | None) -> _Plan:
    summary = _level_node if collapse == "levels" else _merged_node
    cut = np.zeros(groups.size.size, bool)
    np.logical_or.at(cut, groups.of, sub.cut_in | sub.cut_out)
    plan = _Plan([], [])
    ends: list[tuple[str, str]] = []    # per group: the nodes edges end at and start from
    for g in range(groups.size.size):
        positions = groups.members(g)
        if positions.size == 1:
            ends.append(_add_row(plan, frame, sub, int(positions[0]), root))
            continue
        rows = sub.rows[positions]
        node = summary(frame, rows)
        _mark(node.attrs, root=root is not None and int(rows[-1]) == root, cut=bool(cut[g]))
        plan.nodes.append(node)
        ends.append((node.name, node.name))
    for src, dst, count in _group_edges(sub, groups):
        attrs = {"label": _quote(f"×{count}")} if count > 1 else {}
        plan.edges.append((ends[src][1], ends[dst][0], attrs))
    return plan


def _add_row(plan: _Plan, frame: _Frame, sub: _Sub, pos: int,
             root: int | None) -> tuple[str, str]:
    """Add a row micrograd-style: its op node -> its value node; (op or value, value)."""
    row = int(sub.rows[pos])
    value = _value_node(frame, row)
    _mark(value.attrs, root=row == root, cut=bool(sub.cut_out[pos]))
    plan.nodes.append(value)
    if frame.level[row] == 0:
        return value.name, value.name
    op = _op_node(frame, row)
    _mark(op.attrs, root=False, cut=bool(sub.cut_in[pos]))
    plan.nodes.append(op)
    plan.edges.append((op.name, value.name, {}))
    return op.name, value.name


def _group_edges(sub: _Sub, groups: _Groups) -> Iterator[tuple[int, int, int]]:
    """(source group, target group, operand slots) for each edge between two groups."""
    has0, has1 = sub.src0 >= 0, sub.src1 >= 0
    dst = np.concatenate((groups.of[has0], groups.of[has1]))
    src = np.concatenate((groups.of[sub.src0[has0]], groups.of[sub.src1[has1]]))
    keep = src != dst
    n = max(groups.size.size, 1)
    pairs, counts = np.unique(src[keep] * n + dst[keep], return_counts=True)
    return zip((pairs // n).tolist(), (pairs % n).tolist(), counts.tolist())


def _value_node(frame: _Frame, row: int) -> _Node:
    """micrograd's record: ``{ label | data | grad }``."""
    label = _record(frame.labels.get(row, ""), f"data {_num(frame.value[row])}",
                    f"grad {_num(frame.grad[row])}")
    return _Node(f"v{row}", {"label": label, "shape": "record"}, int(frame.scope[row]))


def _op_node(frame: _Frame, row: int) -> _Node:
    text = _op_text(int(frame.op[row]), int(frame.a0[row]), int(frame.a1[row]),
                    float(frame.const[row]))
    return _Node(f"o{row}", {"label": _quote(text)}, int(frame.scope[row]))


def _merged_node(frame: _Frame, rows: np.ndarray) -> _Node:
    """A chain or tree: its size and ops, then data and grad of its last row (its output)."""
    opcodes = frame.op[rows]
    counts = np.bincount(opcodes, minlength=len(OPS))
    _, first_seen = np.unique(opcodes, return_index=True)
    codes = opcodes[np.sort(first_seen)].tolist()      # in the order they first occur
    ops = ", ".join(f"{OPS[c].symbol or 'leaf'} ×{counts[c]}" for c in codes[:4])
    if len(codes) > 4:
        ops += ", …"
    first, tail = int(rows[0]), int(rows[-1])
    lines = [frame.labels.get(tail, ""), f"{rows.size} rows: {ops}",
             f"data {_num(frame.value[tail])}", f"grad {_num(frame.grad[tail])}"]
    return _summary_node(f"c{first}", rows.size, lines,
                         f"{rows.size} rows from {first} to {tail}", int(frame.scope[tail]))


def _level_node(frame: _Frame, rows: np.ndarray) -> _Node:
    """Rows of one opcode and level: their count and the range of data and grad."""
    first = int(rows[0])
    op, level = OPS[frame.op[first]], int(frame.level[first])
    values, grads = frame.value[rows], frame.grad[rows]
    lines = [f"{op.symbol or 'leaf'} ×{rows.size}, level {level}",
             f"data {_num(values.min())} … {_num(values.max())}",
             f"grad {_num(grads.min())} … {_num(grads.max())}"]
    return _summary_node(f"g{first}", rows.size, lines,
                         f"{rows.size} {op.name} rows at level {level}", int(frame.scope[first]))


def _summary_node(name: str, size: int, lines: list[str], tooltip: str, scope: int) -> _Node:
    """A rounded grey box standing for ``size`` rows (its ``rows`` attribute)."""
    attrs = {"label": _quote("\n".join(line for line in lines if line)), **_SUMMARY_STYLE,
             "rows": str(size), "tooltip": _quote(tooltip)}
    return _Node(name, attrs, scope)


def _mark(attrs: dict[str, str], root: bool, cut: bool) -> None:
    """Thick border for the root; dashed for rows with edges to rows not drawn."""
    if root:
        attrs["penwidth"] = "2"
    if cut:
        style = attrs.get("style", "").strip('"')
        attrs["style"] = _quote(f"{style},dashed" if style else "dashed")


# ---------------------------------------------------------------------------------------
# text: labels, numbers, quoting
# ---------------------------------------------------------------------------------------

def _op_text(code: int, a0: int, a1: int, const: float) -> str:
    """The op as micrograd shows it, with the immediate: ``+``, ``* 3``, ``**2``, ``1 /``."""
    op = OPS[code]
    if op.arity < 2 or (a0 >= 0 and a1 >= 0):
        return op.symbol
    k = f"{const:g}"
    if op is POW:
        return f"**{k}" if a1 < 0 else f"{k}**"
    return f"{op.symbol} {k}" if a1 < 0 else f"{k} {op.symbol}"


def _num(x: float) -> str:
    """micrograd's ``%.4f``, switching to ``%.4e`` where that would be long."""
    x = float(x)
    return f"{x:.4f}" if not np.isfinite(x) or abs(x) < 1e6 else f"{x:.4e}"


def _quote(text: str) -> str:
    """A DOT double-quoted string."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _record(*fields: str) -> str:
    """A quoted record label ``{ f1 | f2 | ... }`` with each field's text escaped."""
    return '"{ ' + " | ".join(_field(f) for f in fields) + ' }"'


def _field(text: str) -> str:
    text = text.replace("\\", "\\\\")
    for ch in '{}|<>"':
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", "\\n")


# ---------------------------------------------------------------------------------------
# pydot
# ---------------------------------------------------------------------------------------

def _to_pydot(pydot: Any, plan: _Plan, scope_names: tuple[str, ...] | None,
              rankdir: str) -> pydot.Dot:
    graph = pydot.Dot("tapegrad", graph_type="digraph", rankdir=rankdir)
    clusters: dict[str, Any] = {}

    def container(path: str) -> Any:
        if not path:
            return graph
        if path not in clusters:
            parent, _, name = path.rpartition("/")
            cluster = pydot.Cluster(f"s{len(clusters)}", label=_quote(name),
                                    tooltip=_quote(path), style="rounded", color="grey")
            clusters[path] = cluster
            container(parent).add_subgraph(cluster)
        return clusters[path]

    for node in plan.nodes:
        path = scope_names[node.scope] if scope_names is not None else ""
        container(path).add_node(pydot.Node(node.name, **node.attrs))
    for src, dst, attrs in plan.edges:
        graph.add_edge(pydot.Edge(src, dst, **attrs))
    return graph


def _run_dot(text: str, fmt: str) -> bytes:
    """Render DOT text with Graphviz's ``dot`` program, looked up on ``PATH`` now."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError(
            f"rendering {fmt} needs Graphviz's 'dot' program, which is not on PATH. "
            f"Install Graphviz: {_INSTALL_GRAPHVIZ}. Or save a .dot file instead, "
            "which needs no Graphviz.")
    proc = subprocess.run([exe, f"-T{fmt}"], input=text.encode("utf-8"),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise GraphvizError(f"Graphviz's dot failed (exit status {proc.returncode}) "
                            f"rendering {fmt}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


# ---------------------------------------------------------------------------------------
# streaming export
# ---------------------------------------------------------------------------------------

_ROW_LINE = 'r%d [label="{ %s | data %.5g | grad %.5g }"];\n'


def _export_chunk(frame: _Frame, rows: np.ndarray, labelled: np.ndarray) -> str:
    """DOT text of ``rows`` (ascending): a node per row, then an edge per operand."""
    heads = _export_heads(frame, rows, labelled)
    lines = [_ROW_LINE % t for t in zip(rows.tolist(), heads, frame.value[rows].tolist(),
                                         frame.grad[rows].tolist())]
    for args in (frame.a0[rows], frame.a1[rows]):
        used = args >= 0
        lines += [f"r{a} -> r{r};\n" for a, r in zip(args[used].tolist(), rows[used].tolist())]
    return "".join(lines)


def _export_heads(frame: _Frame, rows: np.ndarray, labelled: np.ndarray) -> list[str]:
    """First record field of each row: its op (or ``leaf``), after its label if any.

    ``labelled`` holds the tape's labelled rows, ascending.
    """
    cache: dict[tuple[int, int, float], str] = {}
    heads = []
    side = (frame.a0[rows] < 0).astype(np.int8) - (frame.a1[rows] < 0)   # 1: const left
    for code, s, c in zip(frame.op[rows].tolist(), side.tolist(), frame.const[rows].tolist()):
        text = cache.get((code, s, c))
        if text is None:
            a0, a1 = (-1, 0) if s == 1 else (0, -1) if s == -1 else (0, 0)
            text = _field(_op_text(code, a0, a1, c) if code else "leaf")
            cache[(code, s, c)] = text
        heads.append(text)
    lo, hi = np.searchsorted(labelled, (rows[0], rows[-1] + 1))
    for r in labelled[lo:hi].tolist():
        i = int(np.searchsorted(rows, r))
        if i < rows.size and rows[i] == r:
            heads[i] = _field(frame.labels[r]) + (": " + heads[i] if frame.op[r] else "")
    return heads
