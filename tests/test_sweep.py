"""The vectorized reverse sweep against a plain sequential reverse pass over the tape.

The reference walks the public columns row by row, newest first, applying each op's
partials from the op table; it knows nothing about intervals, chains or level groups.
Graphs are built to exercise every path of the sweep: long chains (folded), micrograd
style sum chains, wide levels, rows that do not reach the root, roots far from the
start of the tape, and leaves shared by many rows.
"""

import math
import random

import numpy as np
import pytest

from tapegrad import Tape, Value
from tapegrad.ops import OPS


def reference_grads(tape: Tape, root: int) -> np.ndarray:
    ops, args, consts, vals = tape.opcodes, tape.args, tape.consts, tape.values
    adj = np.zeros(root + 1)
    adj[root] = 1.0
    reaches = np.zeros(root + 1, bool)
    reaches[root] = True
    for r in range(root, -1, -1):
        op = OPS[ops[r]]
        if not reaches[r] or op.partials is None:
            continue
        i, j = args[r]
        x = vals[i] if i >= 0 else consts[r]
        y = (vals[j] if j >= 0 else consts[r]) if op.arity == 2 else consts[r]
        with np.errstate(all="ignore"):
            d0, d1 = op.partials(np.float64(x), np.float64(y), np.float64(vals[r]))
        for k, d in ((i, d0), (j, d1)):
            if k >= 0:
                adj[k] += float(d) * adj[r]
                reaches[k] = True
    return np.where(reaches, adj, np.nan)


def build(rng: random.Random, prefix_rows: int, depth: int):
    """A graph mixing the shapes the sweep treats differently; returns (inputs, root)."""
    junk = Value(0.5)
    for _ in range(prefix_rows):             # rows before the graph (root's lo > 0)
        junk = junk * 1.001
    xs = [Value(rng.uniform(-1, 1)) for _ in range(8)]
    h = xs[0]
    for k in range(depth):                    # a recurrence: one long foldable chain
        h = (h * 0.99 + xs[k % 8] * 0.01).tanh()
    wide = [x * h + rng.uniform(-1, 1) for x in xs for _ in range(6)]
    dead = [w.exp() for w in wide[:10]]       # not ancestors of the root
    dead.append(Value(0.0).log())             # -inf, partial inf: must not leak nan
    s = sum(w * w for w in wide)              # micrograd-style sum chain (interleaved)
    s2 = sum(wide[::2])                       # a sum chain of consecutive rows
    mixed = (s / (1.0 + s2 * s2)).sigmoid() + abs(h) ** 1.5 - (2.0 ** xs[1]).log()
    side = [mixed * x for x in xs[:3]]        # more non-ancestors, after the root's inputs
    root = mixed * 3.0 + xs[2].sin() * xs[3].cos()
    return xs, root, dead + side


@pytest.mark.parametrize("seed", range(6))
def test_sweep_matches_sequential_reference(seed):
    rng = random.Random(seed)
    with Tape() as t:
        xs, root, others = build(rng, prefix_rows=rng.choice([0, 50, 500]),
                                 depth=rng.choice([5, 40, 300]))
        for v in others:
            v.grad = 7.0                       # must stay untouched
        root.backward()
    ref = reference_grads(t, root.row)
    for x in xs:
        assert x.grad == pytest.approx(ref[x.row], rel=1e-12, abs=1e-300)
    grads = t.grads
    inner = [r for r in range(root.row + 1) if not math.isnan(ref[r]) and t.levels[r] > 0]
    assert np.allclose(grads[inner], ref[inner], rtol=1e-12, atol=0)
    for v in others:
        assert v.grad == 7.0


def test_sweep_on_random_dags_with_shared_leaves():
    rng = random.Random(11)
    with Tape() as t:
        leaves = [Value(rng.uniform(-1, 1)) for _ in range(30)]
        nodes = list(leaves)
        for _ in range(3000):
            a, b = rng.choice(nodes[-200:]), rng.choice(nodes)
            kind = rng.random()
            v = a * b if kind < 0.3 else (a + b) * 0.5 if kind < 0.6 else (a - b).relu()
            nodes.append(v)
        root = sum(nodes[-50:])
        root.backward()
    ref = reference_grads(t, root.row)
    got = np.array([v.grad for v in leaves])
    want = np.nan_to_num(ref[[v.row for v in leaves]], nan=0.0)
    assert np.allclose(got, want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gap", [0, 3, 40, 400])
def test_graphs_spread_among_other_rows_match_the_reference(gap):
    """The row-by-row sweep skips the rows of other graphs between a graph's rows; past
    a few dozen skipped rows per row it leaves the job to the vectorized schedule.
    Either way the gradients equal the plain reverse pass, and rows that do not reach
    the root (here: each filler divides by zero) neither get gradients nor spoil any."""
    from tapegrad import _sweep
    rng = random.Random(gap)
    with Tape() as tape:
        leaves = [Value(rng.uniform(0.5, 1.5)) for _ in range(4)]
        zero = Value(0.0)
        x = leaves[0]
        for k in range(30):
            for _ in range(gap):
                leaves[k % 4] / zero                # other graphs' rows: inf partials
            x = (x * leaves[(k + 1) % 4] + 0.25).tanh() if k % 3 else x - leaves[k % 4]
        root = x._o - x._b.shift
        swept = _sweep._small(tape.rows_object(), root, _sweep.SMALL_ROWS, False)
        assert (swept > 0) == (gap < 10)          # a thin spread goes to the schedule
        for v in leaves:
            v.grad = 0.0
        x.backward()
        ref = reference_grads(tape, root)
    got = [v.grad for v in leaves]
    want = [ref[v._o - v._b.shift] for v in leaves]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert zero.grad == 0.0 and all(math.isfinite(g) for g in got)


def test_roots_at_a_level_seen_big_skip_the_row_walk(monkeypatch):
    """After a graph too big for the row-by-row sweep, roots of the same level go
    straight to the vectorized sweep (a training loop's next step, a replay's next
    backward); a small graph at that level gets the same gradients that way."""
    from tapegrad import _sweep
    walks = []
    real = _sweep._small
    monkeypatch.setattr(_sweep, "_small", lambda *a, **k: walks.append(1) or real(*a, **k))
    with Tape():
        xs = [Value(0.5 + 0.01 * k) for k in range(600)]
        terms = [(x * x).relu() for x in xs]
        while len(terms) > 1:                 # a tree of sums: 1,800 rows, level 12
            terms = [a + b for a, b in zip(terms[::2], terms[1::2])] + terms[len(terms) & ~1:]
        root = terms[0]
        root.backward()
        assert walks == [1]                   # tried, gave up
        root.backward()
        assert walks == [1]                   # remembered: no walk
        u = Value(0.75)
        small = u
        while small._l < root._l:             # 12 rows at the root's level
            small = small * 1.5
        small.backward()
        assert walks == [1] and small._l == root._l
    assert u.grad == 1.5 ** root._l
    assert [x.grad for x in xs[:3]] == [2 * (2 * x.data) for x in xs[:3]]   # 2 calls
