"""Pictures of the tape: micrograd's ``draw_dot`` on pydot, and views that scale.

``draw_dot(root)`` draws the ancestors of ``root`` the way micrograd does: one record
node ``{ label | data | grad }`` per Value, one small node per op (immediate constants
inside it: ``* 3``, ``+ 1``, ``**2``; or, with ``constants=True``, as their own value
nodes like micrograd's), edges operand -> op -> result. Rows recorded inside
:class:`tapegrad.scope` blocks are drawn in nested clusters.

It returns a :class:`DotGraph`: shown inline in Jupyter, with graphviz-like
``.source``, ``.pipe()`` and ``.render()``, and the ``pydot.Dot`` behind it as
``.pydot`` (its methods also work on the DotGraph itself).

Graphviz's layout time grows much faster than the graph, and pydot keeps an object per
node and edge, so ``draw_dot`` counts the nodes and edges first. Graphs larger than
``max_nodes``/``max_edges`` are collapsed automatically (``collapse="auto"``, the
default: chains, then trees, then levels), with a note on the picture. The views:

* ``around=value, depth=k``: only the rows within ``k`` hops of ``value``;
* ``collapse="chains"``: each chain of rows with one operand and one consumer becomes
  one node;
* ``collapse="trees"``: each row with a single consumer joins its consumer's node, so
  an expression tree (a neuron's products, sums and activation) becomes one node;
* ``collapse="levels"``: rows with the same opcode, level (and scope) become one node.

Collapsed nodes carry the number of rows they stand for (in their label and in a
``rows`` attribute), so the counts add up to the rows drawn. ``export_dot`` streams a
whole tape (10^6 rows in seconds) to a DOT file without building a graph in memory.

pydot is imported when a function needs it: ``pip install "tapegrad[viz]"``. Rendering
(``save_dot`` to ``.svg``/``.png``/``.pdf``, ``DotGraph.pipe``/``render``, the inline
picture) runs Graphviz's ``dot`` program, with a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _graph
from .engine import Value
from .ops import ARITY, OPS, POW
from .tape import Tape

if TYPE_CHECKING:  # pragma: no cover
    import pydot

__all__ = [
    "draw_dot", "render_dot", "save_dot", "export_dot", "DotGraph",
    "GraphTooLargeError", "GraphvizError", "GraphvizNotFoundError", "GraphvizTimeoutError",
    "DEFAULT_MAX_NODES", "DEFAULT_MAX_EDGES", "LONG_EDGE_FACTOR", "DEFAULT_TIMEOUT",
    "SAVE_FORMATS",
]

DEFAULT_MAX_NODES = 2500
"""Nodes ``draw_dot`` draws before it collapses (or, with an explicit ``collapse``, refuses).

Sized on Graphviz 2.43 ``dot -Tsvg`` (2 shared, busy cores): ``MLP(2, [18, 18, 1])``
row by row, 2,005 nodes, lays out in 1.4-2.1 s; ``MLP(2, [20, 20, 1])``, 2,427 nodes, in
3.6-6.0 s; ``MLP(2, [22, 22, 1])``, 2,889 nodes, in 31-48 s (docs/visualization.md)."""

DEFAULT_MAX_EDGES = 3000
"""Edges ``draw_dot`` draws before it collapses (or, with an explicit ``collapse``,
refuses). Long edges count too: ``dot`` lays an edge spanning ``k`` ranks out as a chain
of ``k - 1`` virtual nodes, and ``draw_dot`` also caps those at
``LONG_EDGE_FACTOR * max_edges``. ``MLP(2, [18, 18, 1])`` above has 2,344 edges and
about 11,000 virtual nodes; the moons demo's loss (100 points) collapsed by levels has
only 1,965 edges but about 97,000 virtual nodes (``dot`` had not finished after 90 s),
and collapsed by trees without clusters 9,937 edges (not finished after 30 s)."""

LONG_EDGE_FACTOR = 4
"""Virtual nodes (ranks crossed by long edges) allowed per edge of ``max_edges``."""

DEFAULT_TIMEOUT = 60.0
"""Seconds each run of Graphviz's ``dot`` may take before :class:`GraphvizTimeoutError`."""

SAVE_FORMATS: dict[str, str] = {".dot": "dot", ".gv": "dot", ".svg": "svg",
                                ".png": "png", ".pdf": "pdf"}
"""File extensions :func:`save_dot` understands, and the format each one writes."""

_FORMATS = ("svg", "png", "pdf", "dot")
_RANKDIRS = ("LR", "TB", "RL", "BT")
_COLLAPSE = ("auto", None, "chains", "trees", "levels")
_AUTO_ORDER = (None, "chains", "trees", "levels")
_SUMMARY_STYLE = {"shape": "box", "style": '"rounded,filled"', "fillcolor": '"#eeeeee"'}
_CONSTANT_STYLE = {"shape": "record", "color": "grey", "fontcolor": '"#555555"'}
_NOTE_STYLE = {"labelloc": "t", "labeljust": "l", "fontsize": "10", "fontcolor": '"#555555"'}
_INSTALL_PYDOT = 'pip install "tapegrad[viz]"'
_INSTALL_GRAPHVIZ = ("apt-get install graphviz (Debian/Ubuntu), dnf install graphviz "
                     "(Fedora/RHEL), brew install graphviz (macOS), winget install graphviz "
                     "or choco install graphviz (Windows), conda install graphviz, or see "
                     "https://graphviz.org/download/")


class GraphTooLargeError(ValueError):
    """The graph to draw has more nodes than ``max_nodes`` (or edges than ``max_edges``)."""


class GraphvizError(RuntimeError):
    """Graphviz's ``dot`` program failed to render a graph."""


class GraphvizNotFoundError(GraphvizError):
    """Graphviz's ``dot`` program is not installed (not on ``PATH``)."""


class GraphvizTimeoutError(GraphvizError):
    """Graphviz's ``dot`` program did not finish within the timeout (it was stopped)."""


# ---------------------------------------------------------------------------------------
# the drawn graph
# ---------------------------------------------------------------------------------------

class DotGraph:
    """A drawn graph: a ``pydot.Dot`` that renders like ``graphviz.Source``.

    * In Jupyter it shows as an SVG picture (``_repr_mimebundle_``, ``_repr_svg_``).
    * ``.source`` is the DOT text, ``.pipe(format)`` the rendered bytes, and
      ``.render(filename)`` writes the DOT file and ``filename.<format>`` (micrograd's
      ``draw_dot(loss).render('gout')`` writes ``gout`` and ``gout.svg``).
    * ``.pydot`` is the ``pydot.Dot``; other attributes (``create_svg``, ``write_png``,
      ``get_nodes``, ...) are looked up on it, so code written for pydot keeps working.

    :func:`draw_dot` makes these; the parameters below are kept as attributes of the
    same names.

    Parameters
    ----------
    graph : pydot.Dot
        The graph to wrap.
    format : str, default "svg"
        ``"svg"``, ``"png"``, ``"pdf"`` or ``"dot"``: what ``pipe``, ``render`` and
        :func:`save_dot` (for a path without extension) produce by default.
    node_count, edge_count : int, optional
        The size drawn; counted from ``graph`` when either is left out (negative).
    rows : int, optional
        The tape rows drawn (``-1``: unknown).
    collapse : str, optional
        The view drawn (``None`` for row by row).
    note : str, optional
        The text shown on the picture when ``draw_dot`` collapsed the graph by itself,
        else ``None``.

    Raises
    ------
    ImportError
        If pydot is not installed.
    TypeError
        If ``graph`` is not a ``pydot.Dot``.
    ValueError
        If ``format`` is not one of the above.
    """

    def __init__(self, graph: pydot.Dot, format: str = "svg", *, node_count: int = -1,
                 edge_count: int = -1, rows: int = -1, collapse: str | None = None,
                 note: str | None = None) -> None:
        pydot = _import_pydot()
        if not isinstance(graph, pydot.Dot):
            raise TypeError(f"DotGraph wraps a pydot.Dot, got {_describe_type(graph)}")
        self.format = _check_choice("format", format, _FORMATS)
        if node_count < 0 or edge_count < 0:
            node_count, edge_count = _count_pydot(graph)
        self._graph = graph
        self.node_count = node_count
        self.edge_count = edge_count
        self.rows = rows
        self.collapse = collapse
        self.note = note

    @property
    def pydot(self) -> pydot.Dot:
        """The ``pydot.Dot`` this graph draws with."""
        return self._graph

    @property
    def source(self) -> str:
        """The DOT text (``graphviz.Source.source``)."""
        return self._graph.to_string()

    def pipe(self, format: str | None = None, *,
             timeout: float | None = DEFAULT_TIMEOUT) -> bytes:
        """The graph rendered by Graphviz's ``dot`` program.

        Parameters
        ----------
        format : str, optional
            ``"svg"``, ``"png"``, ``"pdf"``, or ``"dot"`` for the DOT text without
            running Graphviz (default: ``.format``).
        timeout : float or None, default 60.0
            Seconds before ``dot`` is stopped (``None``: wait for ever).

        Returns
        -------
        bytes
            The rendered file's contents.

        Raises
        ------
        GraphvizNotFoundError
            If Graphviz's ``dot`` is not on ``PATH``.
        GraphvizTimeoutError
            If ``dot`` takes more than ``timeout`` seconds.
        GraphvizError
            If ``dot`` fails.
        """
        fmt = self.format if format is None else _check_choice("format", format, _FORMATS)
        text = self.source
        if fmt == "dot":
            return text.encode("utf-8")
        return _run_dot(text, fmt, timeout, (self.node_count, self.edge_count))

    def render(self, filename: str | os.PathLike[str] | None = None,
               directory: str | os.PathLike[str] | None = None, view: bool = False,
               cleanup: bool = False, format: str | None = None, *,
               timeout: float | None = DEFAULT_TIMEOUT) -> str:
        """Write the DOT text to ``filename`` and the picture to ``filename.<format>``.

        Like ``graphviz.Digraph.render``, with the same argument order.

        Parameters
        ----------
        filename : str or os.PathLike, optional
            The DOT file to write (default ``"Digraph.gv"``).
        directory : str or os.PathLike, optional
            The directory to write in (created if needed).
        view : bool, default False
            Open the picture with the system's viewer.
        cleanup : bool, default False
            Delete the DOT file after rendering.
        format : str, optional
            The picture's format (default: ``.format``); see :meth:`pipe`.
        timeout : float or None, default 60.0
            As for :meth:`pipe`.

        Returns
        -------
        str
            The path of the picture (``"gout.svg"`` for ``render("gout")``).

        Raises
        ------
        GraphvizError
            As for :meth:`pipe` (including its subclasses).
        """
        fmt = self.format if format is None else _check_choice("format", format, _FORMATS)
        source = Path("Digraph.gv" if filename is None else _check_path(filename, "render"))
        if directory is not None:
            directory = _check_path(directory, "render")
            directory.mkdir(parents=True, exist_ok=True)
            source = directory / source
        text = self.source
        source.write_text(text, encoding="utf-8")
        out = source.with_name(f"{source.name}.{fmt}")
        out.write_bytes(text.encode("utf-8") if fmt == "dot" else
                        _run_dot(text, fmt, timeout, (self.node_count, self.edge_count)))
        if cleanup:
            source.unlink()
        if view:
            _view(out)
        return os.fspath(out)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Jupyter's display: the SVG picture, and a text line (with the reason when
        Graphviz is missing or fails, so the notebook shows why there is no picture)."""
        bundle = {"text/plain": repr(self)}
        wanted = (include is None or "image/svg+xml" in include) and \
            (exclude is None or "image/svg+xml" not in exclude)
        if wanted:
            try:
                bundle["image/svg+xml"] = self.pipe("svg").decode("utf-8")
            except GraphvizError as err:
                bundle["text/plain"] += f"\nno picture: {err}"
        return bundle

    def _repr_svg_(self) -> str | None:
        """The SVG picture, or ``None`` (no picture) when Graphviz is missing or fails."""
        try:
            return self.pipe("svg").decode("utf-8")
        except GraphvizError:
            return None

    def __getattr__(self, name: str) -> Any:
        graph = self.__dict__.get("_graph")
        if graph is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(graph, name)

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        view = "" if self.collapse is None else f", collapse={self.collapse!r}"
        rows = f"{self.rows:,} rows as " if self.rows >= 0 else ""
        text = (f"<tapegrad.viz.DotGraph: {rows}{self.node_count:,} nodes and "
                f"{self.edge_count:,} edges{view}>")
        return text if self.note is None else f"{text}\n{self.note}"


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------

def draw_dot(root: Value | Tape, format: str = "svg", rankdir: str = "LR", *,
             max_nodes: int = DEFAULT_MAX_NODES, max_edges: int = DEFAULT_MAX_EDGES,
             around: Value | None = None, depth: int = 2, collapse: str | None = "auto",
             clusters: bool = True, constants: bool = False) -> DotGraph:
    """The graph of ``root`` as a :class:`DotGraph`, in micrograd's look.

    Drawing builds the pydot graph only; Graphviz runs when it is rendered.

    Parameters
    ----------
    root : Value or Tape
        A Value (its ancestors are drawn, like micrograd's ``trace``) or a Tape (all of
        its rows).
    format : str, default "svg"
        What ``pipe``/``render`` produce and :func:`save_dot` writes when its path has
        no extension (``"svg"``, ``"png"``, ``"pdf"`` or ``"dot"``).
    rankdir : str, default "LR"
        ``"LR"`` (left to right, micrograd's default), ``"TB"``, ``"RL"``, ``"BT"``.
    max_nodes, max_edges : int, optional
        The largest graph drawn (defaults :data:`DEFAULT_MAX_NODES` and
        :data:`DEFAULT_MAX_EDGES`), with at most ``LONG_EDGE_FACTOR * max_edges`` ranks
        crossed by long edges: Graphviz slows down sharply past a few thousand nodes or
        edges, or with many long edges.
    around : Value, optional
        Draw only the rows within ``depth`` hops of this Value (operands and consumers,
        on ``root``'s tape). Rows with edges to rows left out are dashed.
    depth : int, default 2
        The number of hops for ``around`` (an int >= 0).
    collapse : str or None, default "auto"
        ``"auto"``: row by row when that fits the caps, else the first of ``"chains"``,
        ``"trees"``, ``"levels"`` that fits, with a note on the picture saying so.
        ``None``: row by row. ``"chains"``: each chain of rows with one consumer and
        one operand as one node; ``"trees"``: every row with a single consumer merged
        into that consumer's node; ``"levels"``: the rows of one opcode and level (and
        scope) as one node. Labelled rows are never merged into another node.
    clusters : bool, default True
        Draw rows recorded in :class:`tapegrad.scope` blocks in (nested) clusters.
    constants : bool, default False
        Draw each immediate constant (the ``3`` of ``x * 3``) as its own value node
        feeding the op, as micrograd does (it wraps constants in Values); the exponent
        of ``**`` stays in the op (``**2``), as in micrograd.

    Returns
    -------
    DotGraph
        The drawn graph, with its size and the view drawn.

    Raises
    ------
    GraphTooLargeError
        If the graph exceeds the caps in the view asked for (``"auto"``: in every view).
    ImportError
        If pydot is not installed.
    TypeError
        If ``root`` is not a Value or Tape, ``around`` not a Value, or a count not an
        int.
    ValueError
        If an option is not one of its choices, a count is below its minimum, or
        ``around`` is on another tape.
    """
    pydot = _import_pydot()
    graph_format = _check_choice("format", format, _FORMATS)
    _check_choice("rankdir", rankdir, _RANKDIRS)
    _check_choice("collapse", collapse, _COLLAPSE)
    _check_int("max_nodes", max_nodes, minimum=1)
    _check_int("max_edges", max_edges, minimum=1)
    _check_int("depth", depth, minimum=0)
    tape, root_row = _resolve(root, "draw_dot")
    frame = _Frame.of(tape)
    if around is None:
        rows = _ancestors(frame, root_row) if root_row is not None else np.arange(frame.n)
    else:
        rows = _neighbourhood(frame, _around_row(around, tape), depth)
    sub = _Sub.of(frame, rows, check_cut=around is not None)
    tried: list[_Layout] = []
    for mode in _AUTO_ORDER if collapse == "auto" else (collapse,):
        layout = _layout(frame, sub, mode, clusters, constants).fits(max_nodes, max_edges,
                                                                     frame, sub)
        if layout.fitted(max_nodes, max_edges):
            break
        tried.append(layout)
    else:
        raise _too_large(tried, sub, max_nodes, max_edges, collapse, around, depth)
    plan = _plan(frame, sub, layout, root_row)
    note = _note(sub, layout, tried[0], max_nodes, max_edges) if tried else None
    graph = _to_pydot(pydot, plan, frame.scope_names if clusters else None, rankdir, note)
    return DotGraph(graph, graph_format, node_count=layout.nodes, edge_count=layout.edges,
                    rows=sub.m, collapse=layout.collapse, note=note)


def render_dot(root: Value | Tape | DotGraph, rankdir: str = "LR", **options: Any) -> str:
    """The DOT source of a graph, without running Graphviz.

    Parameters
    ----------
    root : Value, Tape or DotGraph
        A Value or Tape is drawn with ``draw_dot(root, rankdir=rankdir, **options)``;
        a :class:`DotGraph` already drawn gives its ``source``.
    rankdir : str, default "LR"
        As for :func:`draw_dot`.
    **options
        Further arguments of :func:`draw_dot`.

    Returns
    -------
    str
        The DOT text.

    Raises
    ------
    TypeError
        If drawing options come with a :class:`DotGraph`.
    """
    if isinstance(root, DotGraph):
        if options or rankdir != "LR":
            raise TypeError("render_dot got drawing options with a graph that is already "
                            "drawn; pass a Value or Tape to draw it with them")
        return root.source
    return draw_dot(root, rankdir=rankdir, **options).source


def save_dot(graph: DotGraph | pydot.Dot | Value | Tape, path: str | os.PathLike[str], *,
             timeout: float | None = DEFAULT_TIMEOUT, **options: Any) -> Path:
    """Write a graph to ``path``, in the format its extension names.

    ``.dot``/``.gv`` write the DOT text; ``.svg``, ``.png`` and ``.pdf`` run
    Graphviz's ``dot`` program. A path without extension gets the graph's ``format``.

    Parameters
    ----------
    graph : DotGraph, pydot.Dot, Value or Tape
        A :class:`DotGraph` from :func:`draw_dot` (or a ``pydot.Dot``), or a Value or
        Tape drawn with ``draw_dot(graph, **options)``.
    path : str or os.PathLike
        The file to write.
    timeout : float or None, default 60.0
        Seconds Graphviz may take (``None``: no limit).
    **options
        Arguments of :func:`draw_dot`, for a Value or Tape only.

    Returns
    -------
    pathlib.Path
        The path written (with the extension added, if any).

    Raises
    ------
    ValueError
        If the extension is not one of :data:`SAVE_FORMATS`.
    TypeError
        If ``path`` is not a path, or drawing options come with a drawn graph.
    GraphvizNotFoundError
        If Graphviz's ``dot`` is needed and not installed.
    GraphvizTimeoutError
        If it takes more than ``timeout`` seconds.
    """
    pydot = _import_pydot()
    if isinstance(graph, pydot.Dot):
        graph = DotGraph(graph)
    if not isinstance(graph, DotGraph):
        graph = draw_dot(graph, **options)
    elif options:
        raise TypeError(f"save_dot got drawing options {sorted(options)} with a graph "
                        "that is already drawn; pass a Value or Tape to draw it with them")
    path = _check_path(path, "save_dot")
    if not path.suffix:
        path = path.with_suffix("." + graph.format)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_dot cannot write {path.suffix!r} files ({path}); "
                         f"supported extensions: {', '.join(SAVE_FORMATS)}")
    if fmt == "dot":
        path.write_text(graph.source, encoding="utf-8")
    else:
        path.write_bytes(graph.pipe(fmt, timeout=timeout))
    return path


def export_dot(source: Value | Tape, path: str | os.PathLike[str], *,
               rankdir: str = "LR", chunk_rows: int = 1 << 14) -> int:
    """Stream the rows of a tape to a DOT file, one node per row.

    Each row becomes a record ``{ op | data | grad }`` named ``r<row>`` (leaves show
    their label, or ``leaf``), with an edge from each operand row. No pydot objects:
    the text is written ``chunk_rows`` rows at a time from the tape's arrays, so memory
    stays bounded and 10^6 rows take seconds. Graphviz cannot lay out such files; draw
    parts of them with :func:`draw_dot` (``around=``, ``collapse=``) instead.

    Parameters
    ----------
    source : Value or Tape
        A Tape (every row) or a Value (its ancestors).
    path : str or os.PathLike
        The DOT file to write.
    rankdir : str, default "LR"
        As for :func:`draw_dot`.
    chunk_rows : int, default 16384
        Rows formatted per write (>= 1).

    Returns
    -------
    int
        The number of rows written.

    Raises
    ------
    TypeError
        If ``source`` is not a Value or Tape, ``path`` not a path, or ``chunk_rows``
        not an int.
    ValueError
        If ``rankdir`` is not a choice of :func:`draw_dot` or ``chunk_rows`` < 1.
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
        raise ImportError(f"tapegrad.viz needs pydot to draw graphs: {_INSTALL_PYDOT} "
                          "(or pip install pydot)") from err
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
    """Rows ``root`` depends on, itself included, ascending.

    ``_graph.ancestors`` takes one vectorized step per level, which is fast for wide
    graphs but slow for deep ones (a 10^6-row chain has 10^6 levels); there a walk over
    the operand lists is faster.
    """
    if int(frame.level[root]) * _DEEP > root + 1:
        return _ancestors_deep(frame.a0, frame.a1, root)
    mask = _graph.ancestors(frame.a0, frame.a1, frame.level, np.array([root]))
    return np.flatnonzero(mask)


_DEEP = 16      # levels per row above which _ancestors walks instead of sweeping levels


def _ancestors_deep(a0: np.ndarray, a1: np.ndarray, root: int) -> np.ndarray:
    """Ancestors of ``root`` (itself included, ascending) by a depth-first walk: cost
    linear in the rows up to ``root``, whatever the depth."""
    left = a0[: root + 1].tolist()
    right = a1[: root + 1].tolist()
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
            cut_out = _graph.consumers(frame.a0, frame.a1, frame.n)[rows] > \
                _graph.consumers(src0, src1, rows.size)
        return cls(rows, src0, src1, cut_in, cut_out)

    @property
    def m(self) -> int:
        return self.rows.size


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
        return _Groups.of_labels(
            _graph.forest_roots(np.where(joins, consumer, np.arange(sub.m))))
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
    joins = (_graph.consumers(sub.src0, sub.src1, m) == 1) & \
        ~np.isin(sub.rows, list(frame.labels))
    if split_scopes:
        scope = frame.scope[sub.rows]
        joins &= (frame.level[sub.rows] == 0) | (scope[consumer] == scope)
    return consumer, joins


def _level_keys(frame: _Frame, sub: _Sub, split_scopes: bool) -> np.ndarray:
    """One int64 key per position: (scope, opcode, level)."""
    rows = sub.rows
    key = frame.op[rows].astype(np.int64) << 32 | frame.level[rows].astype(np.int64)
    if split_scopes:
        key |= frame.scope[rows].astype(np.int64) << 40
    return key


_ARITY = ARITY                   # shared with tapegrad.ops: grows with defop()


class _Layout(NamedTuple):
    """A view of the selected rows and the size of its picture, before building it."""

    collapse: str | None
    groups: _Groups
    src: np.ndarray       # per edge between groups: source group, target group, slots
    dst: np.ndarray
    slots: np.ndarray
    constant: np.ndarray  # per position: the row is drawn with a constant node
    nodes: int
    edges: int
    virtual: int = -1     # ranks crossed by long edges (dot's virtual nodes); -1: not counted

    def fits(self, max_nodes: int, max_edges: int, frame: _Frame, sub: _Sub) -> _Layout:
        """This layout with ``virtual`` counted when its nodes and edges fit the caps
        (counting takes a Python step per group); test ``fitted`` on the result."""
        if self.nodes > max_nodes or self.edges > max_edges:
            return self
        return self._replace(virtual=_rank_span(frame, sub, self))

    def fitted(self, max_nodes: int, max_edges: int) -> bool:
        return self.nodes <= max_nodes and self.edges <= max_edges and \
            0 <= self.virtual <= LONG_EDGE_FACTOR * max_edges


def _layout(frame: _Frame, sub: _Sub, collapse: str | None, clusters: bool,
            constants: bool) -> _Layout:
    """Group the rows for ``collapse`` and count the nodes and edges to draw: one node
    per collapsed group; per other row a value node, an op node (not for leaves) with
    an edge to it, and with ``constants`` a constant node and edge per immediate."""
    groups = _group(frame, sub, collapse, split_scopes=clusters)
    src, dst, slots = _group_edges(sub, groups)
    single = groups.size == 1
    alone = np.zeros(sub.m, bool)
    alone[groups.order[groups.start[single]]] = True
    inner = alone & (frame.level[sub.rows] > 0)
    constant = np.zeros(sub.m, bool)
    if constants:
        op = frame.op[sub.rows]
        immediate = (frame.a0[sub.rows] < 0) != (frame.a1[sub.rows] < 0)
        constant = inner & (_ARITY[op] == 2) & immediate & (op != POW.code)
    n_inner, n_const = int(inner.sum()), int(constant.sum())
    nodes = int(groups.size.size) + n_inner + n_const
    return _Layout(collapse, groups, src, dst, slots, constant, nodes,
                   int(src.size) + n_inner + n_const)


def _rank_span(frame: _Frame, sub: _Sub, layout: _Layout) -> int:
    """Virtual nodes Graphviz's ``dot`` will add: an edge spanning ``k`` ranks becomes
    ``k - 1`` of them, and they, more than the nodes, make layouts slow.

    Ranks are estimated the way ``dot`` tends to rank: longest paths from the sources
    (a row drawn with op and value nodes takes two ranks), then, from the sinks back,
    each node with at most one consumer moved next to it (``dot`` pulls a tree up to
    the node it feeds). Cost: a Python step per group and edge, so call it on graphs
    that fit the caps.
    """
    groups = layout.groups
    k = groups.size.size
    if k == 0 or layout.src.size == 0:
        return 0
    first = groups.order[groups.start]
    last = groups.order[groups.start + groups.size - 1]
    two = ((groups.size == 1) & (frame.level[sub.rows[first]] > 0)).astype(np.int64)
    if layout.collapse == "levels":
        order = np.argsort(frame.level[sub.rows[first]], kind="stable").tolist()
    else:
        order = np.argsort(last, kind="stable").tolist()   # a group's last row: its output
    src, dst = layout.src, layout.dst
    ins = _adjacency(dst, src, k)
    outs = _adjacency(src, dst, k)
    extra = two.tolist()
    rank = [0] * k                                  # the rank of each group's output node
    for g in order:
        rank[g] = max((rank[s] for s in ins[g]), default=-1) + 1 + extra[g]
    for g in reversed(order):
        if len(outs[g]) == 1:
            (c,) = outs[g]
            rank[g] = rank[c] - extra[c] - 1
    out_rank = np.array(rank, np.int64)
    in_rank = out_rank - two
    return int(np.maximum(in_rank[dst] - out_rank[src] - 1, 0).sum())


def _adjacency(key: np.ndarray, other: np.ndarray, k: int) -> list[list[int]]:
    """For each of ``k`` groups ``g``, the ``other`` ends of the edges whose ``key`` is g."""
    lists: list[list[int]] = [[] for _ in range(k)]
    for a, b in zip(key.tolist(), other.tolist()):
        lists[a].append(b)
    return lists


def _too_large(tried: list[_Layout], sub: _Sub, max_nodes: int, max_edges: int,
               collapse: str | None, around: Value | None, depth: int) -> GraphTooLargeError:
    """The error for a graph over the caps; ``tried``: the views drawn, first to last."""
    first = tried[0]
    head = f"the graph has {sub.m:,} rows, {first.nodes:,} nodes"
    if first.nodes > max_nodes:
        head += f" to draw: more than max_nodes={max_nodes:,}"
    elif first.edges > max_edges:
        head += f" and {first.edges:,} edges to draw: more than max_edges={max_edges:,}"
    else:
        head += (f" and {first.edges:,} edges to draw, whose long edges cross "
                 f"{first.virtual:,} ranks: more than {LONG_EDGE_FACTOR} × "
                 f"max_edges={max_edges:,}")
    hints = []
    if around is None:
        hints.append("draw_dot(..., around=value, depth=2) to draw the rows near one Value")
    else:
        hints.append(f"a smaller depth than {depth}")
    if collapse == "auto":
        least = min(tried[1:], key=lambda t: (t.nodes, t.edges))
        spans = f", crossing {least.virtual:,} ranks" if least.virtual >= 0 else ""
        hints.append(f"collapse='auto' tried 'chains', 'trees' and 'levels': the smallest, "
                     f"collapse={least.collapse!r}, still has {least.nodes:,} nodes and "
                     f"{least.edges:,} edges{spans}")
    else:
        others = [repr(c) for c in _AUTO_ORDER if c is not None and c != collapse]
        hints.append(f"collapse={', '.join(others[:-1])} or {others[-1]} to merge rows into "
                     "summary nodes")
    anyway = "collapse=None, " if collapse == "auto" else ""
    anyway += f"max_nodes={first.nodes}"
    edges_needed = max(first.edges, -(-first.virtual // LONG_EDGE_FACTOR))
    if edges_needed > max_edges:
        anyway += f", max_edges={edges_needed}"
    hints.append(f"{anyway} to draw it anyway (Graphviz struggles above a few thousand "
                 "nodes or edges)")
    hints.append("export_dot(tape, 'graph.dot') to stream every row to a DOT file")
    return GraphTooLargeError(f"{head}. Options: " + "; ".join(hints) + ".")


def _note(sub: _Sub, drawn: _Layout, full: _Layout, max_nodes: int, max_edges: int) -> str:
    """The line on a picture ``draw_dot`` collapsed by itself."""
    if full.nodes > max_nodes:
        over = f"max_nodes={max_nodes:,}"
    elif full.edges > max_edges:
        over = f"max_edges={max_edges:,}"
    else:
        over = f"{LONG_EDGE_FACTOR} × max_edges={max_edges:,} ranks crossed by long edges"
    return (f"collapsed: {sub.m:,} rows drawn as {drawn.nodes:,} nodes "
            f"(collapse={drawn.collapse!r}); row by row they need {full.nodes:,} nodes and "
            f"{full.edges:,} edges, more than {over}.\nPass max_nodes=, max_edges= or "
            "collapse= to change this.")


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


def _plan(frame: _Frame, sub: _Sub, layout: _Layout, root: int | None) -> _Plan:
    groups = layout.groups
    summary = _level_node if layout.collapse == "levels" else _merged_node
    cut = np.zeros(groups.size.size, bool)
    np.logical_or.at(cut, groups.of, sub.cut_in | sub.cut_out)
    plan = _Plan([], [])
    ends: list[tuple[str, str]] = []    # per group: the nodes edges end at and start from
    for g in range(groups.size.size):
        positions = groups.members(g)
        if positions.size == 1:
            pos = int(positions[0])
            ends.append(_add_row(plan, frame, sub, pos, root, bool(layout.constant[pos])))
            continue
        rows = sub.rows[positions]
        node = summary(frame, rows)
        _mark(node.attrs, root=root is not None and int(rows[-1]) == root, cut=bool(cut[g]))
        plan.nodes.append(node)
        ends.append((node.name, node.name))
    for src, dst, count in zip(layout.src.tolist(), layout.dst.tolist(),
                               layout.slots.tolist()):
        attrs = {"label": _quote(f"×{count}")} if count > 1 else {}
        plan.edges.append((ends[src][1], ends[dst][0], attrs))
    return plan


def _add_row(plan: _Plan, frame: _Frame, sub: _Sub, pos: int, root: int | None,
             constant: bool) -> tuple[str, str]:
    """Add a row micrograd-style: its op node -> its value node, and with ``constant``
    a node for its immediate feeding the op; returns (op or value, value)."""
    row = int(sub.rows[pos])
    value = _value_node(frame, row)
    _mark(value.attrs, root=row == root, cut=bool(sub.cut_out[pos]))
    plan.nodes.append(value)
    if frame.level[row] == 0:
        return value.name, value.name
    op = _op_node(frame, row, bare=constant)
    _mark(op.attrs, root=False, cut=bool(sub.cut_in[pos]))
    plan.nodes.append(op)
    plan.edges.append((op.name, value.name, {}))
    if constant:
        node = _constant_node(frame, row)
        plan.nodes.append(node)
        plan.edges.append((node.name, op.name, {}))
    return op.name, value.name


def _group_edges(sub: _Sub, groups: _Groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source group, target group, operand slots) of the edges between two groups."""
    has0, has1 = sub.src0 >= 0, sub.src1 >= 0
    dst = np.concatenate((groups.of[has0], groups.of[has1]))
    src = np.concatenate((groups.of[sub.src0[has0]], groups.of[sub.src1[has1]]))
    keep = src != dst
    n = max(groups.size.size, 1)
    pairs, counts = np.unique(src[keep] * n + dst[keep], return_counts=True)
    return pairs // n, pairs % n, counts


def _value_node(frame: _Frame, row: int) -> _Node:
    """micrograd's record: ``{ label | data | grad }``."""
    label = _record(frame.labels.get(row, ""), f"data {_num(frame.value[row])}",
                    f"grad {_num(frame.grad[row])}")
    return _Node(f"v{row}", {"label": label, "shape": "record"}, int(frame.scope[row]))


def _op_node(frame: _Frame, row: int, bare: bool = False) -> _Node:
    """The op with its immediate (``* 3``), or only its symbol when ``bare``."""
    code = int(frame.op[row])
    text = OPS[code].symbol if bare else _op_text(code, int(frame.a0[row]),
                                                  int(frame.a1[row]), float(frame.const[row]))
    return _Node(f"o{row}", {"label": _quote(text)}, int(frame.scope[row]))


def _constant_node(frame: _Frame, row: int) -> _Node:
    """The immediate of ``row`` as micrograd's Value for it, greyed: ``{ | data 3 | constant }``."""
    label = _record("", f"data {_num(frame.const[row])}", "constant")
    return _Node(f"k{row}", {"label": label, **_CONSTANT_STYLE}, int(frame.scope[row]))


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


def _visible(text: str) -> str:
    """``text`` with the characters DOT, Graphviz or UTF-8 reject made visible: control
    characters other than newline as their U+2400 symbols (NUL as ``␀``, ESC as ``␛``,
    DEL as ``␡``), C1 controls as ``\\x85`` and lone surrogates as ``\\udc80``."""
    if text.isprintable():
        return text         # the usual case: nothing to replace
    return text.translate(_VISIBLE)


class _Visible(dict):
    """``str.translate`` table of :func:`_visible`, filled on demand."""

    def __missing__(self, code: int) -> str | int:
        if code < 0x20 and code != 0x0A:
            out: str | int = chr(0x2400 + code)
        elif code == 0x7F:
            out = chr(0x2421)
        elif 0x80 <= code < 0xA0:
            out = f"\\x{code:02x}"
        elif 0xD800 <= code < 0xE000:
            out = f"\\u{code:04x}"
        else:
            out = code
        self[code] = out
        return out


_VISIBLE = _Visible()


def _quote(text: str) -> str:
    """A DOT double-quoted string."""
    text = _visible(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _record(*fields: str) -> str:
    """A quoted record label ``{ f1 | f2 | ... }`` with each field's text escaped."""
    return '"{ ' + " | ".join(_field(f) for f in fields) + ' }"'


def _field(text: str) -> str:
    text = _visible(text).replace("\\", "\\\\")
    for ch in '{}|<>"':
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", "\\n")


# ---------------------------------------------------------------------------------------
# pydot
# ---------------------------------------------------------------------------------------

def _to_pydot(pydot: Any, plan: _Plan, scope_names: tuple[str, ...] | None,
              rankdir: str, note: str | None = None) -> pydot.Dot:
    graph = pydot.Dot("tapegrad", graph_type="digraph", rankdir=rankdir)
    cluster_style = {"style": "rounded", "color": "grey"}
    if note is not None:        # a graph label; clusters would inherit its style
        lines = [_quote(line)[1:-1] for line in note.split("\n")]
        graph.set("label", '"' + "\\l".join(lines) + '\\l"')     # left-justified lines
        for key, value in _NOTE_STYLE.items():
            graph.set(key, value)
        cluster_style.update(labelloc="t", labeljust="c", fontsize="14", fontcolor="black")
    clusters: dict[str, Any] = {}

    def container(path: str) -> Any:
        if not path:
            return graph
        if path not in clusters:
            parent, _, name = path.rpartition("/")
            cluster = pydot.Cluster(f"s{len(clusters)}", label=_quote(name),
                                    tooltip=_quote(path), **cluster_style)
            clusters[path] = cluster
            container(parent).add_subgraph(cluster)
        return clusters[path]

    for node in plan.nodes:
        path = scope_names[node.scope] if scope_names is not None else ""
        container(path).add_node(pydot.Node(node.name, **node.attrs))
    for src, dst, attrs in plan.edges:
        graph.add_edge(pydot.Edge(src, dst, **attrs))
    return graph


def _run_dot(text: str, fmt: str, timeout: float | None, size: tuple[int, int]) -> bytes:
    """Render DOT text with Graphviz's ``dot`` program, looked up on ``PATH`` now, stopped
    after ``timeout`` seconds (``None``: no limit). ``size``: (nodes, edges), for errors."""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds or None, "
                            f"got {_describe_type(timeout)}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (or None), got {timeout!r}")
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError(
            f"rendering {fmt} needs Graphviz's 'dot' program, which is not on PATH. "
            f"Install Graphviz: {_INSTALL_GRAPHVIZ}. Or save a .dot file instead, "
            "which needs no Graphviz.")
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=text.encode("utf-8"),
                              capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        nodes, edges = size
        raise GraphvizTimeoutError(
            f"Graphviz did not finish laying out {nodes:,} nodes and {edges:,} edges "
            f"within {timeout:g} s (it was stopped); write a .dot file instead "
            "(save_dot(g, 'x.dot')), lower max_nodes, or use collapse='levels' "
            "(or pass a larger timeout=, or timeout=None to wait)") from None
    if proc.returncode != 0:
        raise GraphvizError(f"Graphviz's dot failed (exit status {proc.returncode}) "
                            f"rendering {fmt}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _count_pydot(graph: Any) -> tuple[int, int]:
    """(nodes, edges) of a pydot graph and its subgraphs (default-attribute statements
    ``node``/``edge``/``graph`` are not nodes)."""
    nodes = sum(n.get_name() not in ("node", "edge", "graph") for n in graph.get_nodes())
    edges = len(graph.get_edges())
    for sub in graph.get_subgraphs():
        n, e = _count_pydot(sub)
        nodes, edges = nodes + n, edges + e
    return nodes, edges


def _view(path: Path) -> None:
    """Open ``path`` with the system's viewer, without waiting for it."""
    if sys.platform == "win32":    # pragma: no cover
        os.startfile(os.fspath(path))   # noqa: S606
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    exe = shutil.which(opener)
    if exe is None:
        raise RuntimeError(f"view=True needs {opener!r} to open {path}, which is not on PATH")
    subprocess.Popen([exe, os.fspath(path)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


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
