"""Tape statistics and the dump, checked against counts computed independently here."""

import collections
import json
import random

import numpy as np
import pytest

from tapegrad import Tape, Value, scope
from tapegrad.ops import OPS
from tapegrad.tape import ROW_BYTES


def independent_stats(t: Tape) -> dict:
    """The same quantities, computed with plain Python loops over the public columns."""
    ops, args, levels = t.opcodes.tolist(), t.args.tolist(), t.levels.tolist()
    n = len(ops)
    fan = [0] * n
    for a, b in args:
        for k in (a, b):
            if k >= 0:
                fan[k] += 1
    widths = collections.Counter(levels)
    reader = {}
    for r, (a, b) in enumerate(args):
        for k in (a, b):
            if k >= 0 and fan[k] == 1:
                reader[k] = r
    longest = 0
    for r in range(n):
        length, k = 1, r
        while k in reader:
            k = reader[k]
            length += 1
        longest = max(longest, length)
    return {
        "nodes": n,
        "leaves": levels.count(0),
        "ops": dict(collections.Counter(OPS[o].name for o in ops)),
        "depth": max(levels) + 1,
        "max_width": max(widths.values()),
        "median_width": float(np.median([widths[k] for k in range(max(levels) + 1)])),
        "max_fanout": max(fan),
        "longest_chain": longest,
        "widths": [widths[k] for k in range(max(levels) + 1)],
        "fan": fan,
    }


def check(t: Tape) -> None:
    st = t.stats()
    ref = independent_stats(t)
    for key in ("nodes", "leaves", "ops", "depth", "max_width", "median_width", "max_fanout",
                "longest_chain", "widths"):
        assert getattr(st, key) == ref[key], key
    assert sum(st.width_histogram.values()) == ref["depth"]
    assert sum(st.fanout_histogram.values()) == ref["nodes"]
    assert st.fanout_histogram.get("0", 0) == ref["fan"].count(0)
    assert st.fanout_histogram.get("2-3", 0) == sum(f in (2, 3) for f in ref["fan"])
    assert st.total_nbytes == ref["nodes"] * ROW_BYTES == sum(st.nbytes.values())
    assert st.bytes_per_node == ROW_BYTES


def test_stats_of_a_graph_built_by_hand():
    with Tape() as t:
        a, b = Value(1.0), Value(2.0)     # 2 leaves
        c = a * b                          # level 1
        d = c + a                          # level 2
        e = d * d                          # level 3, d read twice
        f = e.relu().tanh()                # levels 4, 5: a single-consumer chain e -> relu -> tanh
    st = t.stats()
    assert (st.nodes, st.leaves, st.depth, st.max_width) == (7, 2, 6, 2)
    assert st.ops == {"leaf": 2, "mul": 2, "add": 1, "relu": 1, "tanh": 1}
    assert st.widths == [2, 1, 1, 1, 1, 1]
    assert st.max_fanout == 2 and st.longest_chain == 3
    assert f.data == pytest.approx(np.tanh(9.0))
    check(t)


@pytest.mark.parametrize("seed", range(5))
def test_stats_of_random_graphs(seed):
    rng = random.Random(seed)
    with Tape() as t:
        nodes = [Value(rng.uniform(-1, 1)) for _ in range(rng.randint(1, 20))]
        for _ in range(rng.randint(50, 400)):
            a, b = rng.choice(nodes), rng.choice(nodes)
            kind = rng.random()
            nodes.append(a * b if kind < 0.3 else a + 1.0 if kind < 0.5 else
                         (a - b).relu() if kind < 0.7 else a.sin())
    check(t)


def test_stats_json_schema():
    with Tape() as t:
        x = Value(1.0)
        for _ in range(10):
            x = x * 2 + 1
    d = t.stats().to_dict()
    json.dumps(d)
    assert {"nodes", "leaves", "ops", "depth", "max_width", "median_width", "width_histogram",
            "max_fanout", "fanout_histogram", "longest_chain", "nbytes", "total_nbytes",
            "bytes_per_node", "widths"} <= set(d)
    assert d["longest_chain"] == 21 and d["nodes"] == 21   # the leaf starts the chain
    assert set(d["nbytes"]) == {"opcode", "args", "const", "value", "grad", "level", "low"}


def test_stats_of_an_empty_tape():
    st = Tape().stats()
    assert st.nodes == 0 and st.depth == 0 and st.longest_chain == 0 and st.ops == {}


def test_dump_lists_rows_with_operands_values_scopes_and_labels():
    with Tape() as t:
        a = Value(2.0, label="a")
        with scope("layer1"):
            b = a * 3
        c = b + a
        c.backward()
    lines = t.dump().splitlines()
    assert lines[0].startswith("%0 = leaf") and "data 2 grad 4" in lines[0] and "'a'" in lines[0]
    assert lines[1].startswith("%1 = mul %0 3") and "[layer1]" in lines[1]
    assert lines[2].startswith("%2 = add %1 %0") and "data 8 grad 1" in lines[2]


def test_dump_shows_head_and_tail_of_long_tapes():
    with Tape() as t:
        x = Value(0.0)
        for _ in range(99):
            x = x + 1
    lines = t.dump(max_lines=10).splitlines()
    assert len(lines) == 11
    assert lines[0].startswith("%0 = leaf") and lines[4].startswith("%4 = add")
    assert lines[5] == "... 90 rows not shown ..."
    assert lines[6].startswith("%95 = add %94 1") and lines[-1].startswith("%99 = add %98 1")
    with pytest.raises(ValueError, match="max_lines must be an int >= 2"):
        t.dump(max_lines=1)
