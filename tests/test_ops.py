"""Walk the op table: every op's rules against each other and against finite differences."""

import math

import numpy as np
import pytest

import tapegrad
from tapegrad import Tape, Value
from tapegrad.ops import OPS, Op

# Points where each op is smooth, as (x, y); y is ignored by unary ops. A new op without
# an entry here fails test_every_op_has_sample_points: add its domain and its facade call.
SAMPLES = {
    "add": [(0.3, -1.7), (2.5, 4.0)],
    "sub": [(0.3, -1.7), (-2.5, 4.0)],
    "mul": [(0.3, -1.7), (-2.5, 4.0)],
    "div": [(0.3, -1.7), (-2.5, 4.0)],
    "pow": [(1.3, 2.0), (0.7, -1.5), (2.2, 0.5)],
    "neg": [(0.3, 0.0), (-2.5, 0.0)],
    "relu": [(0.3, 0.0), (-2.5, 0.0), (4.0, 0.0)],
    "tanh": [(0.3, 0.0), (-1.5, 0.0)],
    "sigmoid": [(0.3, 0.0), (-3.5, 0.0), (20.0, 0.0)],
    "exp": [(0.3, 0.0), (-2.5, 0.0)],
    "log": [(0.3, 0.0), (2.5, 0.0)],
    "sqrt": [(0.3, 0.0), (2.5, 0.0)],
    "abs": [(0.3, 0.0), (-2.5, 0.0)],
    "sin": [(0.3, 0.0), (-2.5, 0.0)],
    "cos": [(0.3, 0.0), (-2.5, 0.0)],
    "lt": [(0.3, -1.7), (-2.5, 4.0), (1.0, 1.0)],
    "le": [(0.3, -1.7), (-2.5, 4.0), (1.0, 1.0)],
    "gt": [(0.3, -1.7), (-2.5, 4.0), (1.0, 1.0)],
    "ge": [(0.3, -1.7), (-2.5, 4.0), (1.0, 1.0)],
    "atan2": [(0.3, -1.7), (-2.5, 4.0)],
    "log1p": [(0.3, 0.0), (2.5, 0.0), (-0.5, 0.0)],
    "expm1": [(0.3, 0.0), (-2.5, 0.0)],
    "leaky_relu": [(0.3, 0.1), (-2.5, 0.2)],       # (x, slope)
    "maximum": [(0.3, -1.7), (-2.5, 4.0)],
    "minimum": [(0.3, -1.7), (-2.5, 4.0)],
    "heaviside": [(0.3, 0.5), (-2.5, 0.5)],         # (x, value at 0), off the jump
}

# How the facade applies each op to Values (or to a number on one side).
APPLY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "pow": lambda x, y: x ** y,
    "neg": lambda x, y: -x,
    "relu": lambda x, y: x.relu(),
    "tanh": lambda x, y: x.tanh(),
    "sigmoid": lambda x, y: x.sigmoid(),
    "exp": lambda x, y: x.exp(),
    "log": lambda x, y: x.log(),
    "sqrt": lambda x, y: x.sqrt(),
    "abs": lambda x, y: abs(x),
    "sin": lambda x, y: x.sin(),
    "cos": lambda x, y: x.cos(),
    "lt": lambda x, y: x < y,
    "le": lambda x, y: x <= y,
    "gt": lambda x, y: x > y,
    "ge": lambda x, y: x >= y,
    "atan2": lambda x, y: tapegrad.atan2(x, y),
    "log1p": lambda x, y: x.log1p(),
    "expm1": lambda x, y: x.expm1(),
    "leaky_relu": lambda x, y: tapegrad.leaky_relu(x, y),
    "maximum": lambda x, y: tapegrad.maximum(x, y),
    "minimum": lambda x, y: tapegrad.minimum(x, y),
    "heaviside": lambda x, y: tapegrad.heaviside(x, y),
}

COMPUTING = [op for op in OPS if op.forward is not None]
DIFFERENTIABLE = [op for op in COMPUTING if op.partials is not None]
GUARDS = [op for op in COMPUTING if op.partials is None]


def central_difference(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_every_op_has_sample_points():
    assert {op.name for op in COMPUTING} == set(SAMPLES) == set(APPLY)


def test_codes_index_the_table():
    assert [op.code for op in OPS] == list(range(len(OPS)))
    assert len({op.name for op in OPS}) == len(OPS)


@pytest.mark.parametrize("op", COMPUTING, ids=lambda op: op.name)
def test_scalar_rule_equals_vectorized_rule(op: Op):
    xs = np.array([p[0] for p in SAMPLES[op.name]])
    ys = np.array([p[1] for p in SAMPLES[op.name]])
    vec = op.forward(xs, ys)
    for k, (x, y) in enumerate(SAMPLES[op.name]):
        assert op.scalar(x, y) == pytest.approx(vec[k], rel=1e-15, abs=0)


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_partials_match_central_differences(op: Op):
    for x, y in SAMPLES[op.name]:
        out = op.forward(np.float64(x), np.float64(y))
        d0, d1 = op.partials(np.float64(x), np.float64(y), out)
        h = 1e-6 * max(1.0, abs(x))
        fd0 = central_difference(lambda t, y=y: op.evaluate(t, y), x, h)
        assert float(d0) == pytest.approx(fd0, rel=1e-6, abs=1e-9), (op.name, x, y)
        if op.arity == 2:
            h = 1e-6 * max(1.0, abs(y))
            fd1 = central_difference(lambda t, x=x: op.evaluate(x, t), y, h)
            assert float(d1) == pytest.approx(fd1, rel=1e-6, abs=1e-9), (op.name, x, y)


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_facade_records_op_and_backpropagates(op: Op):
    apply = APPLY[op.name]
    for x, y in SAMPLES[op.name]:
        with Tape() as t:
            a, b = Value(x), Value(y)
            out = apply(a, b)
            out.backward()
        assert t.opcodes[out.row] == op.code
        assert out.data == pytest.approx(op.evaluate(x, y), rel=1e-15)
        h = 1e-6 * max(1.0, abs(x))
        assert a.grad == pytest.approx(
            central_difference(lambda s, y=y: op.evaluate(s, y), x, h), rel=1e-6, abs=1e-9)
        if op.arity == 2:
            h = 1e-6 * max(1.0, abs(y))
            assert b.grad == pytest.approx(
                central_difference(lambda s, x=x: op.evaluate(x, s), y, h), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("op", [op for op in DIFFERENTIABLE if op.arity == 2],
                         ids=lambda op: op.name)
def test_binary_op_with_an_immediate_on_either_side_records_one_row(op: Op):
    apply = APPLY[op.name]
    x, y = SAMPLES[op.name][0]
    with Tape() as t:
        a = Value(x)
        left = apply(a, y)      # Value op number
        right = apply(x, a)     # number op Value (reflected)
    assert len(t) == 3
    assert t.args[left.row].tolist() == [a.row, -1]
    # the reflected row keeps the operand order, except that + and * may swap sides
    assert sorted(t.args[right.row].tolist()) == [-1, a.row]
    if op.name not in ("add", "mul"):
        assert t.args[right.row].tolist() == [-1, a.row]
    assert t.consts[left.row] == y and t.consts[right.row] == x
    left.backward()
    assert a.grad == pytest.approx(
        central_difference(lambda s: op.evaluate(s, y), x, 1e-6), rel=1e-6)
    a.grad = 0.0
    right.backward()
    assert a.grad == pytest.approx(
        central_difference(lambda s: op.evaluate(x, s), x, 1e-6), rel=1e-6)


@pytest.mark.parametrize("op", GUARDS, ids=lambda op: op.name)
def test_comparisons_return_bools_and_record_one_guard_row(op: Op):
    apply = APPLY[op.name]
    for x, y in SAMPLES[op.name]:
        with Tape() as t:
            a, b = Value(x), Value(y)
            outcome = apply(a, b)
            against_number = apply(a, y)
        assert type(outcome) is bool and outcome == bool(op.evaluate(x, y))
        assert against_number == outcome
        assert t.opcodes.tolist() == [0, 0, op.code, op.code]
        assert t.values[2] == float(outcome)
        assert t.args.tolist()[3] == [a.row, -1]
    a.backward()                     # guards do not take part in gradients
    assert a.grad == 1.0


@pytest.mark.parametrize(
    "expr, expected",
    [
        (lambda: Value(0.0) ** -1, math.inf),
        (lambda: Value(-0.0) ** -1, -math.inf),
        (lambda: Value(1.0) / 0.0, math.inf),
        (lambda: Value(-1.0) / Value(0.0), -math.inf),
        (lambda: 0.0 / Value(0.0), math.nan),
        (lambda: Value(1000.0).exp(), math.inf),
        (lambda: Value(0.0).log(), -math.inf),
        (lambda: Value(-1.0).log(), math.nan),
        (lambda: Value(-1.0).sqrt(), math.nan),
        (lambda: Value(-8.0) ** (1 / 3), math.nan),
        (lambda: Value(10.0) ** 400, math.inf),
        (lambda: Value(math.inf).sin(), math.nan),
        (lambda: Value(math.nan).relu(), math.nan),
        (lambda: Value(-1000.0).sigmoid(), 0.0),
        (lambda: Value(math.inf) - math.inf, math.nan),
    ],
)
def test_floating_point_edge_cases_follow_ieee(expr, expected):
    out = expr().data
    if math.isnan(expected):
        assert math.isnan(out)
    else:
        assert out == expected and math.copysign(1, out) == math.copysign(1, expected)


def test_edge_case_gradients_follow_ieee():
    x = Value(0.0)
    x.sqrt().backward()
    assert x.grad == math.inf
    y = Value(0.0)
    (y ** 2.0).backward()            # 2 * 0**1 = 0
    assert y.grad == 0.0
    base = Value(0.0)
    k = Value(2.0)
    (base ** k).backward()            # d/dk 0**k at k > 0 is 0, not nan (as in PyTorch)
    assert k.grad == 0.0 and base.grad == 0.0


def test_div_partials_do_not_overflow():
    """d(x/y)/dy = -(x/y)/y: finite where the derivative is (issue 11, item 1)."""
    cases = [(1e300, 1e200, -1e-100), (1e-300, 1e-170, -1e40), (0.0, 1e-200, 0.0)]
    for x, y, want in cases:
        with Tape():
            a, b = Value(x), Value(y)
            (a / b).backward()
        assert b.grad == pytest.approx(want, rel=1e-12, abs=0.0)
        assert a.grad == pytest.approx(1.0 / y, rel=1e-12)


def test_pow_zero_exponent_has_zero_gradient_at_zero():
    """d(x**0)/dx at x = 0 is 0, not 0 * 0**-1 = nan (issue 11, item 2)."""
    with Tape():
        x = Value(0.0)
        (x ** 0).backward()
        assert x.grad == 0.0
        x.grad = 0.0
        k = Value(0.0)
        (x ** k).backward()
        assert x.grad == 0.0 and k.grad == 0.0
        x.grad = 0.0
        poly = sum(c * x ** n for n, c in enumerate([1.0, 2.0, 3.0, 4.0]))
        poly.backward()
        assert x.grad == 2.0                   # d/dx (1 + 2x + 3x^2 + 4x^3) at 0
