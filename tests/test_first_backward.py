"""The first backward of a deep graph: interval plans and the backward schedule built
for them (``Plan.for_backward``, ``Backward``), shape by shape, against the small
Python sweep (the row-by-row reference with each op's scalar partials) and closed forms.

Every graph here is deeper than the frontier rounds reach, so the vectorized sweep
takes the closed interval; ``SMALL_ROWS`` is set to 0 to keep the small path out.
"""

import math
import random

import numpy as np
import pytest

from tapegrad import Tape, Value, _graph, _sweep


def grads_both_ways(make, monkeypatch):
    """(inner, leaves) gradients of ``make()``'s root by the vectorized sweep and by the
    small Python sweep, each on a fresh tape; ``make`` returns (leaves, inner, root)."""
    out = []
    for small_rows in (0, 10**9):
        monkeypatch.setattr(_sweep, "SMALL_ROWS", small_rows)
        with Tape():
            leaves, inner, root = make()
            root.backward()
            out.append(([v.grad for v in inner], [v.grad for v in leaves]))
    return out


def check(make, monkeypatch, exact_leaves=False):
    (vec_inner, vec_leaves), (ref_inner, ref_leaves) = grads_both_ways(make, monkeypatch)
    assert vec_inner == ref_inner                     # bit for bit
    if exact_leaves:
        assert vec_leaves == ref_leaves
    else:                                             # leaf sums may add in another order
        np.testing.assert_allclose(vec_leaves, ref_leaves, rtol=1e-12, atol=1e-300)
    return vec_inner, vec_leaves


def test_recurrence_with_slot_one_immediates_matches_the_closed_form(monkeypatch):
    def make():
        x0 = Value(1.0)
        x, inner = x0, []
        for _ in range(3000):
            x = x * 1.0001 + 1e-4
            inner.append(x)
        return [x0], inner[::50], x

    inner, (g,) = check(make, monkeypatch, exact_leaves=True)
    assert g == pytest.approx(1.0001 ** 3000, rel=1e-12)


def test_immediates_in_slot_zero_only_and_mixed(monkeypatch):
    def slot_zero():
        x0 = Value(0.3)
        x, inner = x0, []
        for k in range(400):
            x = 1.5 - 0.5 / (2.0 + x)           # rsub, rtruediv: immediates in slot 0
            x = 0.9 ** x if k % 3 == 0 else x
            inner.append(x)
        return [x0], inner, x

    def mixed():
        x0, w = Value(0.3), Value(0.9)
        x, inner = x0, []
        for k in range(400):
            x = (x / 4.0 + 4.0 / (3.0 + x * x)) * w if k % 2 else 1.0 - x * 0.5
            inner.append(x)
        return [x0, w], inner, x

    check(slot_zero, monkeypatch)
    check(mixed, monkeypatch)


def test_leaves_inside_the_interval_and_before_it(monkeypatch):
    def make():
        before = [Value(0.1 * k) for k in range(5)]
        x = before[0]
        inner, leaves = [], list(before)
        for k in range(1500):
            if k % 100 == 0:                     # a leaf recorded inside the interval
                leaves.append(Value(1.0 + k / 1000))
                x = x * leaves[-1]
            x = (x * before[k % 5] + before[(k + 2) % 5]).tanh() + x * before[4]
            inner.append(x)
        return leaves, inner, x

    check(make, monkeypatch)


def test_guards_inside_the_interval_are_skipped(monkeypatch):
    def make():
        x0 = Value(0.5)
        x, inner = x0, []
        for k in range(1200):
            x = x * 1.001 if x > 0 else -x        # a guard row every step
            x = x + 0.001 * (k % 3)
            inner.append(x)
        return [x0], inner, x

    check(make, monkeypatch, exact_leaves=True)


def test_parallel_chains_of_one_shape_share_a_block(monkeypatch):
    def make():
        starts = [Value(0.1 + 0.2 * k) for k in range(4)]
        tops, inner = [], []
        for s in starts:                          # recorded one after another
            x = s
            for _ in range(300):
                x = x * 0.999 + 0.002
                inner.append(x)
            tops.append(x)
        root = tops[0]
        for t in tops[1:]:
            root = root * t
        return starts, inner, root

    check(make, monkeypatch, exact_leaves=True)


def test_interval_rows_that_do_not_reach_the_root(monkeypatch):
    def make():
        x0, y0 = Value(0.7), Value(-0.2)
        x, dead, inner = x0, [], []
        for k in range(1500):
            x = x * 0.9995 + 0.0003
            if k % 7 == 0:
                dead.append((x - 1e9).exp())      # read by nothing: 0 * inf must not leak
                dead.append(y0.log())             # nan operand, partial nan
            inner.append(x)
        root = x * 2.0
        return [x0, y0], inner, root

    inner, leaves = check(make, monkeypatch)
    assert leaves[1] == 0.0
    assert all(math.isfinite(g) for g in inner)


def _two_layer_net(samples: int, width: int = 12, guard: bool = False):
    """micrograd's neurons, scalar by scalar: the hidden units' relus have one reader
    each, so the output neuron's ``w * h`` rows (short single-reader paths of their
    own) interleave with its running sum; a hidden sum is folded with its relu (a
    link that is not 1) and its ``w * x`` rows (side partials that are not 1). The
    loss multiplies by a label and subtracts (slot-1 partial -1)."""
    rng = random.Random(7)
    w1 = [[Value(rng.uniform(-1, 1)) for _ in range(8)] for _ in range(width)]
    b1 = [Value(rng.uniform(-0.5, 0.5)) for _ in range(width)]
    w2 = [Value(rng.uniform(-1, 1)) for _ in range(width)]
    b2 = Value(0.25)
    inner, losses = [], []
    for _ in range(samples):
        x = [rng.uniform(-1, 1) for _ in range(8)]
        hidden = [sum((wi * xi for wi, xi in zip(w, x)), b).relu() for w, b in zip(w1, b1)]
        if guard:
            _ = hidden[0] > -1e9          # a checked comparison: the plan is not exact
        out = sum((wi * hi for wi, hi in zip(w2, hidden)), b2)
        inner += hidden + [out]
        label = Value(rng.choice([-1.0, 1.0]))    # out * label: a link and a side edge
        losses.append((1.0 - out * label).relu() * 0.5)    # that are not 1
    root = sum(losses)
    params = [v for row in w1 for v in row] + b1 + w2 + [b2]
    return params, inner, root


@pytest.mark.usefixtures("numpy_kernels")
def test_interleaved_neuron_sums_fold_and_match_the_reference(monkeypatch):
    """The second folding pass takes sums whose rows interleave with other paths. Its
    blocks skip the running product where links are 1 and multiply only the side
    partials that are not 1; every row's gradient equals the small sweep's."""
    check(lambda: _two_layer_net(samples=40), monkeypatch)
    from tapegrad import Function
    for guard in (False, True):
        with Tape():
            params, _, root = _two_layer_net(samples=40, guard=guard)
        f = Function(inputs=params, outputs=root)
        theta = np.array([p.data for p in params])
        _, grad = f.value_and_grad(theta)
        back = f._backward
        assert back.exact is not guard
        blocks = [ch for chs in back.chains.values() for ch in chs]
        assert any(ch.rows.shape[0] >= 12 and ch.rows.shape[1] == 40    # the output sums
                   for ch in blocks)
        assert any(0 < ch.ones_from < ch.rows.shape[0] - 1 for ch in blocks)
        assert any(ch.side_scaled is not None and 0 < ch.side_scaled.size < ch.side_part.size
                   for ch in blocks)
        monkeypatch.setattr(_sweep, "SMALL_ROWS", 10**9)
        with Tape():
            params, _, root = _two_layer_net(samples=40, guard=guard)
            root.backward()
        np.testing.assert_allclose(grad, [p.grad for p in params], rtol=1e-12, atol=1e-300)
        values = f._values(theta[None, :])
        f._run(values)
        full, leaves_only = back.run(values), back.run(values, chain_rows=False)
        assert np.array_equal(full[f._in_local], leaves_only[f._in_local])


def test_the_same_graph_recorded_again_reuses_the_schedule(monkeypatch):
    def recurrence_grad(step: int) -> float:
        x0 = Value(0.5 + step)
        x = x0
        for _ in range(500):
            x = (x * 0.99 + 0.01).relu() + x * 1e-3
        x.backward()
        return x0.grad

    from tapegrad import _plan
    built = []
    real_init = _plan.Backward.__init__

    def counted(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(_sweep, "SMALL_ROWS", 0)
    monkeypatch.setattr(_plan.Backward, "__init__", counted)
    with Tape() as tape:                # one tape: later steps reuse step 0's schedule,
        got = []                        # also after a compaction has moved the rows
        for step in range(4):
            got.append(recurrence_grad(step))
            if step == 1:
                assert tape.compact() > 0
    assert len(built) == 1
    monkeypatch.setattr(_plan.Backward, "__init__", real_init)
    monkeypatch.setattr(_sweep, "SMALL_ROWS", 10**9)
    want = []
    for step in range(4):
        with Tape():
            want.append(recurrence_grad(step))
    assert got == want


def test_repeated_backward_accumulates_leaves_and_resets_inner(monkeypatch):
    monkeypatch.setattr(_sweep, "SMALL_ROWS", 0)
    with Tape():
        x0 = Value(1.0)
        x = x0
        for _ in range(2000):
            x = x * 1.0001 + 1e-4
        mid = x
        for _ in range(10):
            x = x * 1.0001
        x.backward()
        first, mid_first = x0.grad, mid.grad
        x.backward()
        assert x0.grad == 2 * first
        assert mid.grad == mid_first


# -- the graph primitives these use -------------------------------------------------------


def test_unique_is_numpys():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 7, 1000):
        for dtype in (np.int32, np.int64):
            a = rng.integers(-5, 40, n).astype(dtype)
            got, want = _graph.unique(a), np.unique(a)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_as_slice_only_for_ranges():
    assert _graph.as_slice(np.arange(3, 9)) == slice(3, 9)
    idx = np.array([1, 2, 4])
    assert _graph.as_slice(idx) is idx
    empty = np.empty(0, np.int64)
    assert _graph.as_slice(empty) is empty


def test_int32_reader_counts_equal_bincount():
    rng = np.random.default_rng(4)
    a0, a1 = rng.integers(0, 50, 300), rng.integers(0, 50, 300).astype(np.int32)
    fast = _graph.consumers(a0, a1, 60, nonnegative=True)
    want = np.bincount(a0, minlength=60) + np.bincount(a1, minlength=60)
    assert np.array_equal(fast, want)


def test_runs_are_the_consecutive_chains():
    rng = np.random.default_rng(5)
    for trial in range(300):
        k = int(rng.integers(1, 60))
        pred = np.full(k, -1, np.int32)
        free = set(range(k))
        for i in range(1, k):                 # every node at most one successor
            recurrence = trial % 2 and rng.random() < 0.9     # members often a range
            p = i - 1 if recurrence else int(rng.integers(0, i))
            if rng.random() < 0.8 and p in free:
                pred[i] = p
                free.discard(p)
        got = [r.tolist() for r in _graph.runs(pred, 2)]
        members = np.flatnonzero((pred >= 0) | np.isin(np.arange(k), pred[pred >= 0]))
        want, cur = [], []
        for a, b in zip(members[:-1].tolist(), members[1:].tolist()):
            if pred[b] == a:
                cur = cur or [a]
                cur.append(b)
            elif cur:
                want.append(cur)
                cur = []
        if cur:
            want.append(cur)
        assert got == want


def test_recurrences_gather_slot_zero_partials_only(monkeypatch):
    """x = x * c + d reads no slot-1 partial (the constants' adjoints are not kept):
    the sweep gathers half of them, the first half of the full gather."""
    monkeypatch.setattr(_sweep, "SMALL_ROWS", 0)
    with Tape() as tape:
        x0 = Value(1.0)
        x = x0
        for _ in range(2000):
            x = x * 1.0001 + 1e-4
        x.backward()
        plan, back = tape.rows_object().plan(("structure",))
        values = plan.new_values()
        values[: plan.rows.size] = tape.values[plan.rows]
        full, half = back.partials(values), back.partials(values, slot1=False)
    assert not back._slot1_read and half.size * 2 == full.size
    assert np.array_equal(half, full[: half.size])
    assert x0.grad == pytest.approx(1.0001 ** 2000, rel=1e-12)
