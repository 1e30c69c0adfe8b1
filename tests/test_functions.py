"""Function-style ops and defop (ops added by users to the op table)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import tapegrad
from tapegrad import Function, Tape, Value, defop

_names = itertools.count()


def fresh(name: str) -> str:
    """A name no other test registered (the op table is per process)."""
    return f"{name}_{next(_names)}"


def test_function_ops_take_values_or_numbers():
    assert tapegrad.atan2(2.0, 1.0) == math.atan2(2.0, 1.0)
    assert tapegrad.maximum(1, 3.0) == 3.0 and tapegrad.clip(5.0, 0.0, 3.0) == 3.0
    y, x = Value(2.0), Value(1.0)
    a = tapegrad.atan2(y, x)
    a.backward()
    assert a.data == math.atan2(2.0, 1.0)
    assert (y.grad, x.grad) == pytest.approx((1 / 5, -2 / 5), rel=1e-15)
    b = tapegrad.atan2(3.0, x)                      # a number on the left: one row
    assert b.data == math.atan2(3.0, 1.0) and b.tape.args[b.row].tolist()[0] == -1


def test_maximum_minimum_and_clip_route_gradients():
    a, b = Value(1.0), Value(1.0)
    tapegrad.maximum(a, b).backward()
    assert (a.grad, b.grad) == (0.5, 0.5)            # a tie is split, as in PyTorch
    x = Value(5.0)
    tapegrad.clip(x, 0.0, 3.0).backward()
    assert x.grad == 0.0
    x.grad = 0.0
    x.data = 1.5
    c = tapegrad.clip(x, 0.0, 3.0)
    c.backward()
    assert (c.data, x.grad) == (1.5, 1.0)
    lr = Value(-2.0).leaky_relu(0.1)
    assert lr.data == pytest.approx(-0.2) and lr._op == "LeakyReLU"


def test_function_ops_broadcast_over_arrays():
    v = Value(0.5)
    out = tapegrad.maximum(np.array([0.0, 1.0]), v)
    assert [o.data for o in out] == [0.5, 1.0]
    assert np.allclose(tapegrad.atan2(np.array([1.0, 2.0]), 1.0).astype(float),
                       np.arctan2([1.0, 2.0], 1.0))


def test_defop_records_backpropagates_and_replays():
    name = fresh("softplus")
    softplus = defop(name, lambda x, y: np.logaddexp(0.0, x),
                     lambda x, y, out: (1.0 / (1.0 + np.exp(-x)), 0.0), reads="x")
    with Tape() as t:
        w = Value(0.3)
        out = softplus(w * 2.0) + 1.0
        out.backward()
        assert out.data == pytest.approx(math.log1p(math.exp(0.6)) + 1.0, rel=1e-15)
        assert w.grad == pytest.approx(2.0 / (1.0 + math.exp(-0.6)), rel=1e-15)
        assert out._prev and name in t.dump()
    w.data = -1.0
    t.forward()
    assert out.data == pytest.approx(math.log1p(math.exp(-2.0)) + 1.0, rel=1e-15)
    f = Function([w], [out])
    value, grad = f.value_and_grad(np.array([[0.3], [-1.0]]))
    assert grad[:, 0] == pytest.approx(2.0 / (1.0 + np.exp(-2.0 * np.array([0.3, -1.0]))))
    assert softplus(0.0) == pytest.approx(math.log(2.0))
    # large graphs take the vectorized backward: the same gradient
    with Tape():
        x = Value(0.1)
        h = x
        for _ in range(1500):
            h = softplus(h) * 0.5
        h.backward()
        vec = x.grad
        x.grad = 0.0
        h2 = x
        for _ in range(1500):
            h2 = (h2.exp() + 1.0).log() * 0.5
        h2.backward()
    assert vec == pytest.approx(x.grad, rel=1e-9)


def test_defop_binary_and_anomalies():
    name = fresh("hypot")
    hypot = defop(name, lambda x, y: np.hypot(x, y),
                  lambda x, y, out: (x / out, y / out), arity=2)
    a, b = Value(3.0), Value(4.0)
    h = hypot(a, b)
    h.backward()
    assert (h.data, a.grad, b.grad) == (5.0, 0.6, 0.8)
    z = Value(0.0)
    with tapegrad.detect_anomaly(), pytest.raises(
            FloatingPointError, match=rf"backward through {name} at row \d+"):
        hypot(z, 0.0).backward()


def test_defop_rejects_bad_definitions():
    name = fresh("twice")
    twice = defop(name, lambda x, y: 2 * x, lambda x, y, out: (2.0, 0.0), reads="")
    with pytest.raises(ValueError, match=f"an op named '{name}' exists already"):
        defop(name, lambda x, y: 2 * x, lambda x, y, out: (2.0, 0.0))
    with pytest.raises(ValueError, match="op name must be an identifier, got 'a b'"):
        defop("a b", lambda x, y: x, lambda x, y, out: (1.0, 0.0))
    with pytest.raises(ValueError, match="arity must be 1 or 2, got 3"):
        defop(fresh("three"), lambda x, y: x, lambda x, y, out: (1.0, 0.0), arity=3)
    with pytest.raises(TypeError, match="partials must be callable, got float"):
        defop(fresh("bad"), lambda x, y: x, 1.0)
    with pytest.raises(TypeError, match=f"{name} takes 1 operand, got 2"):
        twice(Value(1.0), 2.0)
    assert twice(Value(1.5)).data == 3.0
