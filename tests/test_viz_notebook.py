"""Notebook display: ``draw_dot`` in a real kernel, and the HTML of ``stats()``/``dump()``.

The notebook test needs nbclient, nbformat and ipykernel (and Graphviz's ``dot``); it
is skipped, saying which is missing, where they are not installed.
"""

from __future__ import annotations

import html
import importlib.util
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tapegrad import Tape, Value, scope


class _Collect(HTMLParser):
    """Tags opened and closed, and the text, of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        self.tags.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self.stack and self.stack[-1] in ("td", "th"):
            self.cells.append(data)


def parse_html(fragment: str) -> _Collect:
    parser = _Collect()
    parser.feed(fragment)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def sample_tape() -> Tape:
    with Tape() as t:
        x = Value(2.0, label="x<&>")
        with scope("layer1"):
            y = (x * 3 + 1).tanh()
        z = y * y + x
    z.backward()
    return t


def test_stats_show_as_an_html_table_of_their_numbers():
    t = sample_tape()
    stats = t.stats()
    page = parse_html(stats._repr_html_())
    assert page.tags.count("table") == 3
    cells = page.cells
    for key, value in (("rows", f"{stats.nodes:,}"), ("leaves", f"{stats.leaves:,}"),
                       ("levels", f"{stats.depth:,}"), ("max fan-out", f"{stats.max_fanout:,}"),
                       ("longest single-consumer chain", f"{stats.longest_chain:,}"),
                       ("memory (bytes)", f"{stats.total_nbytes:,}")):
        i = cells.index(key)
        assert cells[i + 1] == value, key
    for op, count in stats.ops.items():
        assert cells[cells.index(op) + 1] == f"{count:,}"
    for column, size in stats.nbytes.items():
        assert cells[cells.index(column) + 1] == f"{size:,}"
    assert str(stats).startswith(f"{stats.nodes:,} rows")        # the text form is kept


def test_dump_is_a_str_that_shows_as_a_pre_block():
    t = sample_tape()
    text = t.dump()
    assert isinstance(text, str) and text == str(text) and text.splitlines()[0].startswith("%0")
    page = parse_html(text._repr_html_())
    assert page.tags == ["pre"]
    assert "".join(page.text) == text                         # every row, escaped exactly
    assert "&lt;&amp;&gt;" in text._repr_html_() and html.unescape(
        text._repr_html_()).count("'x<&>'") == 1
    long = sample_tape()
    with long:
        v = Value(0.0)
        for _ in range(50):
            v = v + 1.0
    shown = long.dump(max_lines=10)
    assert "rows not shown" in "".join(parse_html(shown._repr_html_()).text)


_NOTEBOOK_PACKAGES = ("nbclient", "nbformat", "ipykernel")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not "
                    "installed")
def test_draw_dot_shows_an_svg_picture_in_a_notebook():
    missing = [p for p in _NOTEBOOK_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"the notebook test needs {', '.join(missing)} "
                    f"(pip install {' '.join(_NOTEBOOK_PACKAGES)})")
    pytest.importorskip("pydot")
    import nbformat
    from nbclient import NotebookClient

    import tapegrad

    root = str(Path(tapegrad.__file__).resolve().parent.parent)   # this tapegrad, in the kernel
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {root!r})\n"
                                  "from tapegrad import Value\n"
                                  "from tapegrad.viz import draw_dot"),
        nbformat.v4.new_code_cell("a = Value(2.0)\nb = a*3 + 1\ndraw_dot(b)"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": root}}).execute()
    outputs = nb.cells[-1].outputs
    assert len(outputs) == 1 and outputs[0].output_type == "execute_result"
    data = outputs[0].data
    assert "<svg" in data["image/svg+xml"] and "data 7.0000" in data["image/svg+xml"]
    assert data["text/plain"].startswith("<tapegrad.viz.DotGraph: 3 rows as 5 nodes and 4 edges>")
