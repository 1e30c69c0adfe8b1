"""Liveness without scanning the garbage collector (issue: engine v2).

A Value holds the block of rows its row is in; a tape keeps every block anything
refers to, whatever holds the Value, and the rows those need. These tests churn
reclaiming tapes with small thresholds so that many compactions run.
"""

from __future__ import annotations

import collections
import functools
import gc
import math
import random

import numpy as np
import pytest

import tapegrad
from tapegrad import GuardError, Tape, Value, scope
from tapegrad._rows import BLOCK_ROWS
from tapegrad.nn import MLP
from tapegrad.ops import Op


def churn(rows: int) -> None:
    """Record and drop about ``rows`` rows of small graphs on the current tape."""
    x = Value(0.5)
    for _ in range(rows // 4):
        y = (x * 1.5 + 0.25).tanh()
        del y


class Param(Value):
    """A subclass as forks write them (it has a __dict__)."""


def test_value_subclass_keeps_its_data_through_many_compactions():
    with Tape("subclass", reclaim=True, reclaim_min_rows=5_000) as t:
        params = [Param(float(k)) for k in range(10)]
        total = sum(p * 2.0 for p in params)
        churn(200_000)
        assert t.rows_object().epoch > 10                 # it did compact, many times
        assert len(t) < 20_000
        assert [p.data for p in params] == [float(k) for k in range(10)]
        assert total.data == 90.0
        total.backward()
        assert [p.grad for p in params] == [2.0] * 10


def test_two_models_with_subclass_weights_train_in_a_sweep():
    def train(seed: int) -> list[float]:
        rng = random.Random(seed)
        w = [Param(rng.uniform(-1, 1)) for _ in range(3)]
        losses = []
        for _step in range(300):
            x = [rng.uniform(-1, 1) for _ in range(3)]
            loss = (sum(wi * xi for wi, xi in zip(w, x)) - 1.0) ** 2
            for wi in w:
                wi.grad = 0.0
            loss.backward()
            for wi in w:
                wi.data -= 0.05 * wi.grad
            losses.append(loss.data)
            churn(200)
        return losses

    with Tape("reference"):
        expected = [train(1), train(2)]
    with Tape("sweep", reclaim=True, reclaim_min_rows=3_000) as t:
        got = [train(1), train(2)]
    assert got == expected
    assert t.rows_object().epoch > 5


def test_values_made_before_gc_freeze_survive_compaction():
    with Tape("frozen", reclaim=True, reclaim_min_rows=5_000) as t:
        a = Value(3.0)
        b = a * a + 1.0
        gc.freeze()
        try:
            churn(60_000)
            t.compact()
            assert (a.data, b.data) == (3.0, 10.0)
            b.backward()
            assert a.grad == 6.0
        finally:
            gc.unfreeze()


def test_values_held_anywhere_keep_their_rows():
    """Object arrays, closures, C containers, partials, frozen dataclass-like objects."""
    with Tape("holders", reclaim=True, reclaim_min_rows=4_000) as t:
        x = Value(2.0)
        arr = np.array([x * k for k in range(5)], dtype=object)
        closure = (lambda v: lambda: v)(x ** 3)
        dq = collections.deque([x + 10.0])
        part = functools.partial(lambda v: v, x.exp())
        holder = type("Frozen", (), {"__slots__": ("v",)})()
        holder.v = x.sin()
        del x
        churn(50_000)
        assert t.rows_object().epoch >= 5
        assert [v.data for v in arr] == [0.0, 2.0, 4.0, 6.0, 8.0]
        assert closure().data == 8.0
        assert dq[0].data == 12.0
        assert part().data == math.exp(2.0)
        assert holder.v.data == math.sin(2.0)
        closure().backward()
        leaf = t.value(t.args[closure().row][0])      # the Value x's row, found again
        assert leaf.grad == 12.0


def test_guards_survive_compaction_and_still_guard_replays():
    with Tape("guarded") as t:
        x = Value(1.0)
        y = x * 2.0 if x > 0 else x * 3.0           # a guard on a leaf, then one row
        churn(2_000)
        t.compact()
        assert y.data == 2.0
        x.data = 5.0
        t.forward()
        assert y.data == 10.0
        x.data = -1.0
        with pytest.raises(GuardError, match=r"replay diverged at row \d+ \(gt: x > y\)"):
            t.forward()


def test_guards_on_non_leaves_survive_compaction():
    with Tape("guarded2") as t:
        x = Value(1.0)
        h = (x * 2.0).tanh()
        out = h * 4.0 if h > 0.5 else h * 8.0
        churn(2_000)
        t.compact()
        x.data = -1.0
        with pytest.raises(GuardError, match="recorded True, now False"):
            t.forward()
    assert out.data == pytest.approx(4 * math.tanh(2.0))


def test_a_guard_nothing_recorded_after_is_released():
    with Tape("released") as t:
        x = Value(1.0)
        churn(2 * BLOCK_ROWS)                        # the guard in a block of its own
        _ = x > 0                                    # nothing depends on this branch
        churn(2 * BLOCK_ROWS)
        t.compact()
        assert not any(name in ("lt", "le", "gt", "ge")
                       for name in (tapegrad.ops.OPS[c].name for c in t.opcodes))


def test_scope_names_are_released_with_their_rows():
    with Tape("scopes", reclaim=True, reclaim_min_rows=5_000) as t:
        keep = Value(1.0)
        for k in range(20_001):
            with scope(f"step{k}"):
                y = keep * 2.0
        assert t.rows_object().epoch >= 1
        names = t.scope_names
        assert len(names) < 4_000            # not 20,002: released with their rows
        assert names[0] == ""
        assert t.scope_of(y.row) == "step20000"
        ids = t.scope_ids
        assert ids.max() < len(names)


def test_an_op_without_partials_is_an_error_where_it_is_defined():
    with pytest.raises(TypeError, match="op 'twice' takes operands but defines no partials"):
        Op(99, "twice", "2x", 1, lambda x, y: 2 * x, lambda x, y: 2 * x, None)
    with pytest.raises(TypeError, match="guard op 'odd' must not define partials"):
        Op(98, "odd", "?", 2, None, None, lambda x, y, o: (0, 0), guard=True)


def test_memory_reaches_a_steady_state_in_a_micrograd_loop():
    """1,000 steps of a small model on a reclaiming tape (many compactions): the tape's
    rows and the process's RSS stop growing."""
    statm = "/proc/self/statm"
    try:
        open(statm).close()
    except OSError:
        pytest.skip("needs /proc/self/statm")

    def rss() -> int:
        with open(statm) as f:
            return int(f.read().split()[1]) * 4096

    random.seed(0)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (20, 2))
    ys = np.sign(X[:, 0] * X[:, 1])
    sizes, mem = {}, {}
    with Tape("loop", reclaim=True, reclaim_min_rows=50_000) as t:
        model = MLP(2, [8, 1])
        for step in range(1, 1001):
            inputs = [list(map(Value, row)) for row in X]
            scores = list(map(model, inputs))
            loss = sum((1 + -yi * s).relu() for yi, s in zip(ys, scores)) * (1.0 / len(ys))
            model.zero_grad()
            loss.backward()
            for p in model.parameters():
                p.data -= 0.05 * p.grad
            if step in (300, 1000):
                gc.collect()
                sizes[step], mem[step] = len(t), rss()
    assert t.rows_object().epoch > 10
    assert sizes[1000] <= 2 * 50_000 + 2 * BLOCK_ROWS
    assert mem[1000] <= 1.10 * mem[300]


def test_position_on_the_tape_does_not_change_what_backward_sweeps():
    """A 3-op graph late on a long tape sweeps its own rows, not the tape's."""
    with Tape("long") as t:
        x = Value(1.0)
        for _ in range(100_000):
            x = x * 1.0 + 0.0
        a, b = Value(2.0), Value(3.0)
        c = (a * b + a).relu()
        with tapegrad.profile() as prof:
            c.backward()
        assert len(t) > 200_000
    assert prof.backward_calls == 1
    assert prof.to_dict()["backward_rows"] <= 5
    assert (a.grad, b.grad) == (4.0, 2.0)
