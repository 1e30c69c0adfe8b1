"""Hand-inlined fast paths agree with the general paths they stand in for.

* the recorders in tapegrad._record (binary, reflected, unary) write exactly the rows
  that record_general writes (detect_anomaly sends every op down the general path);
* the row-by-row backward of small graphs gives the gradients of the vectorized
  schedule, and both match central differences.
"""

from __future__ import annotations

import functools
import math
import operator
import random

import numpy as np
import pytest

from tapegrad import Tape, Value, _record, _sweep, detect_anomaly, ops
from tapegrad.ops import OPS

STEPS = [
    lambda a, b, c: a + b, lambda a, b, c: a * b, lambda a, b, c: a - b,
    lambda a, b, c: a / (b * b + 1.0), lambda a, b, c: a + c, lambda a, b, c: c + a,
    lambda a, b, c: a * c, lambda a, b, c: c * a, lambda a, b, c: c - a,
    lambda a, b, c: c / (a * a + 1.0), lambda a, b, c: (a * a + 0.1) ** 0.5,
    lambda a, b, c: 2.0 ** (a * 0.1), lambda a, b, c: a.tanh(),
    lambda a, b, c: a.relu() + a.sigmoid(), lambda a, b, c: (a * 0.1).exp(),
    lambda a, b, c: (a * a + 1.0).log() + abs(a).sqrt() + a.sin() * a.cos() - (-a),
]
"""One step of a random program per kind: every op, Value and number operands."""


def program(seed: int, n: int = 120):
    """A random program over every op and operand kind; returns (leaves, outputs)."""
    rng = random.Random(seed)
    leaves = [Value(rng.uniform(0.5, 2.0)) for _ in range(4)]
    pool = list(leaves)
    for k in range(n):
        a, b = rng.choice(pool), rng.choice(pool)
        c = rng.choice([0.5, 2, 3.0, np.float64(1.5), -1])
        pool.append(STEPS[k % len(STEPS)](a, b, c))
    return leaves, pool[4:]


def rows_of(tape: Tape) -> dict[str, np.ndarray]:
    cols = tape.columns()
    return {"op": cols.op.copy(), "a0": cols.a0.copy(), "a1": cols.a1.copy(),
            "const": cols.const.copy(), "value": cols.value.copy(),
            "level": cols.level.copy(), "low": cols.low.copy()}


@pytest.mark.parametrize("seed", range(4))
def test_inlined_recorders_write_the_rows_of_the_general_path(seed):
    with Tape("fast") as fast:
        program(seed)
    with Tape("general") as general, detect_anomaly():
        program(seed)
    a, b = rows_of(fast), rows_of(general)
    assert len(fast) == len(general) > 100
    for key in a:
        assert np.array_equal(a[key].view(np.uint8), b[key].view(np.uint8)), key


def test_inlined_recorders_cover_leaf_only_ops_and_every_operand_type():
    def run():
        x, y = Value(1.5), Value(-0.5)
        return [x * y, x + 2, 2 + x, x - 1, 1 - x, x * np.float64(2.0), 3 * x, x / 4,
                4 / x, x ** 2, 2 ** x, -x, x.relu(), abs(y), x * True]

    with Tape("fast") as fast:
        out_fast = [v.data for v in run()]
    with Tape("general") as general, detect_anomaly():
        out_general = [v.data for v in run()]
    assert out_fast == out_general
    a, b = rows_of(fast), rows_of(general)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_inlined_arithmetic_writes_the_rows_of_the_general_path():
    """``+ - *``, ``neg`` and ``relu`` are compiled into the recorders as expressions,
    unary ops call their math function directly: on signed zeros, infinities, nan,
    overflow and underflow they write the rows (bit for bit) of record_general, which
    applies the ops' scalar rules."""
    specials = [0.0, -0.0, 1.0, -2.5, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]
    general = _record.record_general
    add, sub, mul = ops.ADD, ops.SUB, ops.MUL
    written = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y,
               lambda x, c: c + x, lambda x, c: c - x, lambda x, c: c * x]
    recorded = [lambda x, y: general(add, x, y), lambda x, y: general(sub, x, y),
                lambda x, y: general(mul, x, y),
                lambda x, c: general(add, x, c, mirrored=True),
                lambda x, c: general(sub, x, c, reflected=True),
                lambda x, c: general(mul, x, c, mirrored=True)]

    method = {"neg": "__neg__", "abs": "__abs__"}
    unary = [op for op in OPS if op.arity == 1 and not (op.guard or op.custom)
             and hasattr(Value, method.get(op.name, op.name))]   # not ops tests define
    written += [operator.methodcaller(method.get(op.name, op.name)) for op in unary]
    recorded += [functools.partial(general, op) for op in unary]

    def run(fns):
        xs = [Value(x) for x in specials]
        out = []
        for x in xs:
            inner = fns[2](x, 1.0)                  # not a leaf
            for y in xs + specials + [3, -7]:
                out += [f(x, y) for f in fns[:3]] + [f(inner, y) for f in fns[:3]]
                if type(y) is not Value:
                    out += [f(x, y) for f in fns[3:6]]
            out += [f(v) for f in fns[6:] for v in (x, inner)]
        return out

    tapes = []
    for fns in (written, recorded):
        with Tape() as t:
            data = [v.data for v in run(fns)]
        tapes.append((rows_of(t), [repr(x) for x in data]))
    (a, data_a), (b, data_b) = tapes
    assert data_a == data_b
    for key in a:
        assert np.array_equal(a[key].view(np.uint8), b[key].view(np.uint8)), key
    covered = [add, sub, mul, *unary]
    assert set(_record._INLINE) <= {getattr(op.scalar, "of_x", op.scalar) for op in covered}


def grads(seed: int, small_rows: int, monkeypatch) -> tuple[list[float], list[float]]:
    monkeypatch.setattr(_sweep, "SMALL_ROWS", small_rows)
    with Tape():
        leaves, outs = program(seed, n=60)
        root = sum(outs[-12:])
        root.backward()
        inner = [v.grad for v in outs[-12:]]
        return [v.grad for v in leaves], inner


@pytest.mark.parametrize("seed", range(6))
def test_row_by_row_backward_equals_the_vectorized_schedule(seed, monkeypatch):
    vec_leaves, vec_inner = grads(seed, 0, monkeypatch)            # never the small path
    seq_leaves, seq_inner = grads(seed, 10**9, monkeypatch)        # always the small path
    assert seq_inner == vec_inner
    np.testing.assert_allclose(seq_leaves, vec_leaves, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("small_rows", [0, 10**9])
def test_both_backward_paths_match_central_differences(small_rows, monkeypatch):
    monkeypatch.setattr(_sweep, "SMALL_ROWS", small_rows)
    for seed in range(3):
        with Tape() as t:
            leaves, outs = program(seed, n=40)
            root = sum(outs[-8:])
            root.backward()
        got = [v.grad for v in leaves]
        base = [v.data for v in leaves]
        for k, leaf in enumerate(leaves):
            h = 1e-6 * max(1.0, abs(base[k]))
            values = []
            for sign in (1, -1):
                leaf.data = base[k] + sign * h
                t.forward()
                values.append(root.data)
            leaf.data = base[k]
            want = (values[0] - values[1]) / (2 * h)
            assert got[k] == pytest.approx(want, rel=1e-5, abs=1e-6), (seed, k)


EXACT = {"add", "sub", "mul", "div", "neg", "relu", "abs", "sqrt", "tanh", "sigmoid", "exp"}
"""Ops whose scalar and vectorized partials are the same arithmetic on the same inputs."""


def test_every_op_has_agreeing_scalar_and_vectorized_partials():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-3, 3, 200), [0.0, -0.0, 1.0, -1.0, 1e300, 1e-300,
                                                 math.inf, -math.inf, math.nan]])
    ys = np.concatenate([rng.uniform(-3, 3, 200), [0.0, 2.0, 0.0, 3.0, 1e200, 1e-170,
                                                 1.0, 2.0, 1.0]])
    for op in OPS:
        if op.partials is None:
            continue
        with np.errstate(all="ignore"):
            out = op.forward(xs, ys)
            vec = [np.broadcast_to(d, xs.shape) for d in op.partials(xs, ys, out)]
        for k in range(xs.size):
            scalar = op.local(float(xs[k]), float(ys[k]), float(out[k]))
            for slot in range(op.arity):
                want, got = float(vec[slot][k]), scalar[slot]
                same = want == got or (math.isnan(want) and math.isnan(got))
                if not same and op.name not in EXACT:     # libm and NumPy: an ulp or two
                    same = math.isclose(want, got, rel_tol=1e-15)
                assert same, (op.name, slot, xs[k], ys[k], want, got)


def test_leaf_fast_path_writes_the_rows_of_the_general_path():
    """Value(float) takes an inlined path; Value(np.float64) the general one."""
    tapes = []
    for make in (float, np.float64):
        with Tape() as t:
            vs = [Value(make(x)) for x in (1.5, -0.0, float("inf"))]
            y = vs[0] * vs[1] + vs[2]
            y.backward()
        tapes.append((t.columns(), [v.grad for v in vs], [v.data for v in vs]))
    (a, ga, da), (b, gb, db) = tapes
    for k in a._fields:
        assert np.array_equal(getattr(a, k).view(np.uint8), getattr(b, k).view(np.uint8)), k
    assert ga == gb and [repr(x) for x in da] == [repr(x) for x in db]
