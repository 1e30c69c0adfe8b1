"""SGD and Adam: updates against hand-computed values, micrograd's loop, bad arguments."""

import math
import random

import numpy as np
import pytest

from tapegrad import Tape, Value
from tapegrad.nn import MLP
from tapegrad.optim import SGD, Adam


def make_params() -> list[Value]:
    return [Value(1.0), Value(-2.0)]


def set_grads(params: list[Value], grads: list[float]) -> None:
    for p, g in zip(params, grads):
        p.grad = g


def data(params: list[Value]) -> list[float]:
    return [p.data for p in params]


def test_sgd_plain_is_micrograds_update_bit_for_bit():
    random.seed(0)
    ps = [Value(random.uniform(-1, 1)) for _ in range(50)]
    ref = [p.data for p in ps]
    opt = SGD(ps, lr=0.37)
    for step in range(3):
        grads = [random.gauss(0, 1) for _ in ps]
        set_grads(ps, grads)
        opt.lr = 0.37 - 0.1 * step
        opt.step()
        ref = [x - opt.lr * g for x, g in zip(ref, grads)]   # p.data -= lr * p.grad
        assert data(ps) == ref


def test_sgd_momentum_and_weight_decay_by_hand():
    ps = make_params()
    opt = SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)
    set_grads(ps, [0.5, -1.0])
    opt.step()
    # g = grad + 0.1 p = [0.6, -1.2]; v = g; p -= 0.1 v
    assert data(ps) == pytest.approx([0.94, -1.88], rel=1e-14)
    set_grads(ps, [0.2, 0.4])
    opt.step()
    # g = [0.2 + 0.094, 0.4 - 0.188] = [0.294, 0.212]; v = 0.9 [0.6, -1.2] + g
    assert opt.velocity.tolist() == pytest.approx([0.834, -0.868], rel=1e-14)
    assert data(ps) == pytest.approx([0.94 - 0.0834, -1.88 + 0.0868], rel=1e-14)
    set_grads(ps, [0.0, 0.0])
    opt.step()
    # g = 0.1 p = [0.08566, -0.17932]; v = 0.9 [0.834, -0.868] + g
    v = [0.9 * 0.834 + 0.08566, 0.9 * -0.868 - 0.17932]
    assert data(ps) == pytest.approx([0.8566 - 0.1 * v[0], -1.7932 - 0.1 * v[1]], rel=1e-14)
    assert opt.steps == 3


def test_sgd_weight_decay_without_momentum():
    ps = make_params()
    SGD(ps, lr=0.5, weight_decay=0.2).step()     # grads are 0: pure decay p -= 0.5 * 0.2 p
    assert data(ps) == [0.9, -1.8]


def test_adam_by_hand():
    ps = make_params()
    opt = Adam(ps, lr=0.1)
    set_grads(ps, [0.5, -1.0])
    opt.step()
    # t = 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2: p -= 0.1 g / (|g| + 1e-8)
    expect = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1.0 / (1.0 + 1e-8)]
    assert data(ps) == pytest.approx(expect, rel=1e-14)
    assert opt.m.tolist() == pytest.approx([0.05, -0.1], rel=1e-14)
    assert opt.v.tolist() == pytest.approx([0.00025, 0.001], rel=1e-14)
    set_grads(ps, [0.2, 0.4])
    opt.step()
    m = [0.9 * 0.05 + 0.1 * 0.2, 0.9 * -0.1 + 0.1 * 0.4]            # [0.065, -0.05]
    v = [0.999 * 0.00025 + 0.001 * 0.04, 0.999 * 0.001 + 0.001 * 0.16]
    m_hat = [x / (1 - 0.9**2) for x in m]
    v_hat = [x / (1 - 0.999**2) for x in v]
    expect = [e - 0.1 * mh / (math.sqrt(vh) + 1e-8) for e, mh, vh in zip(expect, m_hat, v_hat)]
    assert data(ps) == pytest.approx(expect, rel=1e-12)
    assert opt.m.tolist() == pytest.approx([0.065, -0.05], rel=1e-14)


def test_adam_weight_decay_and_betas_by_hand():
    ps = make_params()
    opt = Adam(ps, lr=0.01, betas=(0.5, 0.75), eps=1e-3, weight_decay=0.5)
    set_grads(ps, [0.0, 0.0])
    opt.step()
    # g = 0.5 p = [0.5, -1.0]; m_hat = g; v_hat = g^2
    expect = [1.0 - 0.01 * 0.5 / (0.5 + 1e-3), -2.0 + 0.01 * 1.0 / (1.0 + 1e-3)]
    assert data(ps) == pytest.approx(expect, rel=1e-14)
    opt.step()
    # t = 2: m1 = 0.5 g1 = [0.25, -0.5], v1 = 0.25 g1^2 = [0.0625, 0.25]
    g = [0.5 * expect[0], 0.5 * expect[1]]
    m = [0.5 * 0.25 + 0.5 * g[0], 0.5 * -0.5 + 0.5 * g[1]]
    v = [0.75 * 0.25 * 0.25 + 0.25 * g[0] ** 2, 0.75 * 0.25 * 1.0 + 0.25 * g[1] ** 2]
    expect = [e - 0.01 * (mi / 0.75) / (math.sqrt(vi / (1 - 0.75**2)) + 1e-3)
              for e, mi, vi in zip(expect, m, v)]
    assert data(ps) == pytest.approx(expect, rel=1e-13)


def test_optimizers_train_a_model():
    random.seed(3)
    with Tape() as t:
        model = MLP(1, [8, 1], nonlin="tanh")
        xs = [-1.0, -0.5, 0.0, 0.5, 1.0]
        for opt in (Adam(model.parameters(), lr=0.05), SGD(model.parameters(), lr=0.05,
                                                            momentum=0.9)):
            losses = []
            for _ in range(60):
                loss = sum((model([x]) - x * x) ** 2 for x in xs)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.data)
            assert losses[-1] < 0.1 * losses[0]
    t.reset()


def test_zero_grad_and_lr_attribute():
    ps = make_params()
    opt = SGD(ps, lr=1.0)
    set_grads(ps, [3.0, 4.0])
    opt.zero_grad()
    assert [p.grad for p in ps] == [0.0, 0.0]
    opt.lr = 0.25
    assert opt.lr == 0.25
    opt.lr = np.float64(0.5)
    assert type(opt.lr) is float
    with pytest.raises(ValueError, match="lr must be >= 0, got -0.1"):
        opt.lr = -0.1
    assert opt.lr == 0.5
    assert repr(opt) == "SGD(2 params, lr=0.5, momentum=0, weight_decay=0)"
    assert repr(Adam(ps)) == "Adam(2 params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, " \
                             "weight_decay=0)"


def test_params_are_taken_once_from_any_iterable():
    model = MLP(2, [2, 1])
    opt = SGD((p for p in model.parameters()), lr=0.1)
    assert len(opt.params) == 9
    for p in model.parameters():
        p.grad = 1.0
    before = [p.data for p in model.parameters()]
    opt.step()
    assert [p.data for p in model.parameters()] == [x - 0.1 for x in before]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(params=[]), ValueError, "params is empty"),
    (dict(params=[1.0]), TypeError, r"params\[0\] must be a tapegrad Value, got 1.0 \(float\)"),
    (dict(params=5), TypeError, "params must be an iterable of Values, got int"),
    (dict(params="single"), TypeError, "params must be an iterable of Values, got a single"),
    (dict(params="module"), TypeError, r"got a Module: pass model.parameters\(\)"),
    (dict(params="twice"), ValueError, r"params\[1\] appears more than once"),
    (dict(lr=-1), ValueError, "lr must be >= 0, got -1.0"),
    (dict(lr="0.1"), TypeError, "lr must be a real number, got '0.1' \\(str\\)"),
    (dict(lr=True), TypeError, "lr must be a real number, got True \\(bool\\)"),
    (dict(lr=math.inf), ValueError, "lr must be finite, got inf"),
    (dict(lr=math.nan), ValueError, "lr must be finite, got nan"),
    (dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
    (dict(momentum=-0.5), ValueError, r"momentum must be in \[0, 1\), got -0.5"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay must be >= 0, got -0.0001"),
])
def test_sgd_rejects_bad_arguments(kwargs, error, message):
    p = Value(1.0)
    special = {"single": p, "module": MLP(1, [1]), "twice": [p, p]}
    args = {"params": [p], "lr": 0.1, **kwargs}
    args["params"] = special.get(args["params"], args["params"]) \
        if isinstance(args["params"], str) else args["params"]
    with pytest.raises(error, match=message):
        SGD(**args)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0, 1\), got 1.0"),
    (dict(betas=(-0.1, 0.9)), ValueError, r"betas\[0\] must be in \[0, 1\), got -0.1"),
    (dict(betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\), got 0.9"),
    (dict(betas=(0.9, 0.99, 0.9)), TypeError, "betas must be a pair"),
    (dict(eps=0.0), ValueError, "eps must be > 0, got 0.0"),
    (dict(eps=None), TypeError, "eps must be a real number, got None"),
    (dict(lr=-1e-3), ValueError, "lr must be >= 0"),
    (dict(weight_decay=-1), ValueError, "weight_decay must be >= 0, got -1.0"),
])
def test_adam_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Adam([Value(1.0)], **kwargs)
