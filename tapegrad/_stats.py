"""Whole-tape statistics and the text dump, computed from a tape's column views.

Everything is vectorized (no Python loop per row): ``stats()`` on a 10^7-row tape
takes seconds. The one iterative part, the longest single-consumer chain, is list
ranking by pointer jumping: O(n log L) for chains of length L.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _graph
from ._rows import Columns
from .ops import OPS


@dataclass
class TapeStats:
    """What a tape holds: size, op mix, shape of the graph, memory.

    ``widths`` lists the rows per level (level 0 holds the leaves); the histograms
    bucket by powers of two: key ``"4-7"`` counts levels (or rows) whose width
    (or fan-out) lies in 4..7.
    """

    nodes: int
    leaves: int
    ops: dict[str, int]
    depth: int
    max_width: int
    median_width: float
    width_histogram: dict[str, int]
    max_fanout: int
    fanout_histogram: dict[str, int]
    longest_chain: int
    nbytes: dict[str, int]
    total_nbytes: int
    bytes_per_node: float
    widths: list[int] = field(repr=False)

    def to_dict(self) -> dict:
        """Plain Python types only (JSON-serialisable)."""
        return asdict(self)

    def __str__(self) -> str:
        mix = ", ".join(f"{k} {v:,}" for k, v in sorted(self.ops.items(), key=lambda kv: -kv[1]))
        return (
            f"{self.nodes:,} rows ({self.leaves:,} leaves), {self.depth:,} levels "
            f"(widest {self.max_width:,}, median {self.median_width:g}), "
            f"max fan-out {self.max_fanout:,}, longest single-consumer chain "
            f"{self.longest_chain:,}\n"
            f"ops: {mix}\n"
            f"memory: {self.total_nbytes:,} bytes ({self.bytes_per_node:.1f} per row)"
        )

    def _repr_html_(self) -> str:
        """Jupyter's display: a table of the numbers (``str()`` stays the text form)."""
        def table(rows: list[tuple[str, str]], head: tuple[str, str] | None = None) -> str:
            top = "" if head is None else \
                "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + \
                "</tr></thead>"
            body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                           f"<td style='text-align:right'>{html.escape(v)}</td></tr>"
                           for k, v in rows)
            return f"<table>{top}<tbody>{body}</tbody></table>"

        def histogram(counts: dict[str, int]) -> str:
            return ", ".join(f"{k}: {v:,}" for k, v in counts.items()) or "none"

        summary = [
            ("rows", f"{self.nodes:,}"), ("leaves", f"{self.leaves:,}"),
            ("levels", f"{self.depth:,}"), ("widest level", f"{self.max_width:,}"),
            ("median level width", f"{self.median_width:g}"),
            ("level widths (histogram)", histogram(self.width_histogram)),
            ("max fan-out", f"{self.max_fanout:,}"),
            ("fan-out (histogram)", histogram(self.fanout_histogram)),
            ("longest single-consumer chain", f"{self.longest_chain:,}"),
            ("memory (bytes)", f"{self.total_nbytes:,}"),
            ("bytes per row", f"{self.bytes_per_node:.1f}"),
        ]
        ops = sorted(self.ops.items(), key=lambda kv: -kv[1])
        memory = list(self.nbytes.items())
        return ("<div class='tapegrad-stats'>"
                + table(summary)
                + table([(k, f"{v:,}") for k, v in ops], ("op", "rows"))
                + table([(k, f"{v:,}") for k, v in memory], ("column", "bytes"))
                + "</div>")


class Dump(str):
    """The text of :func:`dump` (a ``str``: print it, compare it, write it); in Jupyter
    it shows as a ``<pre>`` block instead of a quoted string with ``\\n`` escapes."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return f"<pre class='tapegrad-dump'>{html.escape(str(self))}</pre>"


def _pow2_histogram(values: np.ndarray) -> dict[str, int]:
    """Counts of ``values`` (>= 0) in buckets 0, 1, 2-3, 4-7, ..."""
    out: dict[str, int] = {}
    zero = int(np.count_nonzero(values == 0))
    if zero:
        out["0"] = zero
    positive = values[values > 0]
    if positive.size:
        bucket = np.floor(np.log2(positive)).astype(np.int64)
        counts = np.bincount(bucket)
        for b in np.flatnonzero(counts).tolist():
            lo, hi = 1 << b, (1 << (b + 1)) - 1
            out[str(lo) if lo == hi else f"{lo}-{hi}"] = int(counts[b])
    return out


def consumers(cols: Columns) -> np.ndarray:
    """How many row operand slots read each row."""
    return _graph.consumers(cols.a0, cols.a1, cols.op.size)


def stats(cols: Columns, column_bytes: dict[str, int]) -> TapeStats:
    """Statistics of the rows in ``cols``; ``column_bytes`` maps column name to bytes."""
    n = cols.op.size
    op_counts = np.bincount(cols.op.astype(np.intp), minlength=len(OPS))
    widths = np.bincount(cols.level) if n else np.zeros(0, np.int64)
    fan = consumers(cols)
    total = int(sum(column_bytes.values()))
    return TapeStats(
        nodes=n,
        leaves=int(np.count_nonzero(cols.level == 0)),
        ops={OPS[c].name: int(op_counts[c]) for c in np.flatnonzero(op_counts).tolist()},
        depth=int(widths.size),
        max_width=int(widths.max()) if widths.size else 0,
        median_width=float(np.median(widths)) if widths.size else 0.0,
        width_histogram=_pow2_histogram(widths),
        max_fanout=int(fan.max()) if n else 0,
        fanout_histogram=_pow2_histogram(fan),
        longest_chain=_graph.longest_chain(cols.a0, cols.a1, cols.op.size),
        nbytes={k: int(v) for k, v in column_bytes.items()},
        total_nbytes=total,
        bytes_per_node=total / n if n else 0.0,
        widths=widths.astype(int).tolist(),
    )


def _row_text(r: int, op: int, a0: int, a1: int, c: float, value: float, grad: float,
              label: str, scope: str) -> str:
    rule = OPS[op]
    if rule.arity == 0:
        expr = "leaf"
    else:
        operands = [f"%{a}" if a >= 0 else f"{c:g}" for a in ((a0,) if rule.arity == 1
                                                           else (a0, a1))]
        expr = " ".join([rule.name] + operands)
    left = f"%{r} = {expr}"
    note = f"# data {value:.6g} grad {grad:.6g}"
    if scope:
        note += f"  [{scope}]"
    if label:
        note += f"  {label!r}"
    return f"{left:<28} {note}"


def dump(cols: Columns, labels: dict[int, str], scope_ids: np.ndarray,
         scope_names: list[str], max_lines: int) -> str:
    """One line per row, head and tail when there are more than ``max_lines`` rows."""
    n = cols.op.size
    if n <= max_lines:
        shown = [range(n)]
    else:
        head = (max_lines + 1) // 2
        shown = [range(head), range(n - (max_lines - head), n)]
    lines = []
    for k, part in enumerate(shown):
        if k == 1:
            lines.append(f"... {n - max_lines:,} rows not shown ...")
        for r in part:
            lines.append(_row_text(
                r, int(cols.op[r]), int(cols.a0[r]), int(cols.a1[r]), float(cols.const[r]),
                float(cols.value[r]), float(cols.grad[r]), labels.get(r, ""),
                scope_names[scope_ids[r]]))
    return Dump("\n".join(lines))
