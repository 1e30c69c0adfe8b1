"""micrograd idioms from real code: attributes on Values, copies, pickles, NumPy arrays."""

from __future__ import annotations

import copy
import math
import pickle
import random

import numpy as np
import pytest

from tapegrad import Tape, Value
from tapegrad.nn import MLP


def test_values_take_attributes_as_forks_optimizers_set_them():
    p = Value(0.5)
    p.velocity = 0.0
    p.name = "w0"
    p.velocity = 0.9 * p.velocity + 0.1
    assert (p.velocity, p.name) == (0.1, "w0")
    assert not hasattr(p * 2, "velocity")


def test_copy_of_a_leaf_is_an_independent_leaf():
    with Tape():
        a = Value(2.0, label="a")
        a.grad = 3.0
        a.momentum = 0.5
        b = copy.copy(a)
        b.data = 9.0
        assert (a.data, b.data) == (2.0, 9.0)       # no aliasing
        assert (b.grad, b.label, b.momentum) == (3.0, "a", 0.5)
        assert b.row != a.row and b.is_leaf()


def test_deepcopy_keeps_the_best_model_independent():
    random.seed(0)
    model = MLP(2, [4, 1])
    best = copy.deepcopy(model)
    x = [0.3, -0.7]
    assert best(x).data == model(x).data
    assert [p.data for p in best.parameters()] == [p.data for p in model.parameters()]
    assert not any(p is q for p, q in zip(best.parameters(), model.parameters()))
    for p in model.parameters():
        p.data += 1.0
    assert all(q.data == p.data - 1.0 for p, q in zip(model.parameters(), best.parameters()))
    out = best(x)
    out.backward()
    assert any(q.grad != 0.0 for q in best.parameters())
    assert all(p.grad == 0.0 for p in model.parameters())


def test_non_leaf_values_refuse_to_be_copied_or_pickled():
    v = Value(2.0) * 3
    for action, what in ((copy.copy, "copy"), (copy.deepcopy, "deepcopy"),
                         (pickle.dumps, "pickling")):
        with pytest.raises(RuntimeError, match=rf"only leaf Values \(made with Value\(x\)\) "
                                               rf"support {what}: this one was computed by "
                                               r"'\*' at row \d+ of tape"):
            action(v)


def test_leaves_and_modules_pickle_round_trip():
    a = Value(1.5, label="x")
    a.grad = -2.0
    b = pickle.loads(pickle.dumps(a))
    assert (b.data, b.grad, b.label) == (1.5, -2.0, "x") and b is not a
    random.seed(1)
    model = MLP(3, [5, 5, 1], nonlin="tanh")
    again = pickle.loads(pickle.dumps(model))
    assert repr(again) == repr(model)
    x = [0.1, -0.2, 0.3]
    assert again(x).data == model(x).data


def test_numpy_arrays_broadcast_into_object_arrays_of_values():
    v = Value(3.0)
    arr = np.array([1.0, 2.0])
    for got, want in ((arr * v, [3.0, 6.0]), (v * arr, [3.0, 6.0]), (arr + v, [4.0, 5.0]),
                      (v - arr, [2.0, 1.0]), (arr - v, [-2.0, -1.0]), (arr / v, [1 / 3, 2 / 3]),
                      (v ** arr, [3.0, 9.0]), (arr ** v, [1.0, 8.0])):
        assert got.dtype == object and got.shape == (2,)
        assert [g.data for g in got] == pytest.approx(want, rel=1e-15)
    assert (arr < v).tolist() == [True, True] and (v < arr).tolist() == [False, False]
    grid = np.arange(6.0).reshape(2, 3) * v
    assert grid.shape == (2, 3) and grid[1, 2].data == 15.0
    sum(grid.ravel()).backward()
    assert v.grad == 15.0


def test_object_array_matrix_products_differentiate():
    W = np.array([[Value(1.0), Value(2.0)], [Value(3.0), Value(4.0)]], dtype=object)
    x = np.array([Value(1.0), Value(-1.0)], dtype=object)
    y = W @ x
    assert [v.data for v in y] == [-1.0, -1.0]
    y.sum().backward()
    assert (x[0].grad, x[1].grad) == (4.0, 6.0)
    assert [w.grad for w in W.ravel()] == [1.0, -1.0, 1.0, -1.0]


def walk(root):
    """A micrograd-style graph walker (as micrograd's trace_graph notebook writes one):
    a set of visited nodes, edges as (child, parent) pairs."""
    nodes, edges = set(), set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)
    build(root)
    return nodes, edges


def test_prev_returns_the_values_the_user_holds():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    assert a in c._prev and b in c._prev
    assert c._prev == c._prev
    assert {id(v) for v in c._prev} == {id(v) for v in c._prev}   # the same objects
    d = c * (a + b)                            # the lecture's diamond: 5 nodes, not 7
    nodes, edges = walk(d)
    assert len(nodes) == 5 and len(edges) == 6
    assert c in nodes and a in nodes


def test_graph_walkers_count_micrographs_nodes_and_edges():
    import micrograd.engine
    import micrograd.nn

    random.seed(0)
    ours = MLP(2, [8, 8, 8, 8, 1])([Value(1.0), Value(-2.0)])
    random.seed(0)
    theirs = micrograd.nn.MLP(2, [8, 8, 8, 8, 1])([micrograd.engine.Value(1.0),
                                                     micrograd.engine.Value(-2.0)])
    n, e = walk(ours)
    n2, e2 = walk(theirs)
    assert (len(n), len(e)) == (len(n2), len(e2)) == (715, 896)
    # node names by id() are consistent: every edge joins two collected nodes
    ids = {id(v) for v in n}
    assert all(id(x) in ids and id(y) in ids for x, y in e)


def test_manual_backprop_node_by_node_equals_backward():
    """The lecture's manual backprop: o.grad = 1, then _backward() in reverse topological
    order (a build_topo with a visited set)."""
    x1, x2, w1, w2, b = Value(2.0), Value(0.0), Value(-3.0), Value(1.0), Value(6.8813735870)
    o = (x1 * w1 + x2 * w2 + b).tanh()
    topo, visited = [], set()

    def build_topo(v):
        if v not in visited:
            visited.add(v)
            for child in v._prev:
                build_topo(child)
            topo.append(v)
    build_topo(o)
    o.grad = 1.0
    for v in reversed(topo):
        v._backward()
    manual = [v.grad for v in (x1, x2, w1, w2, b)]
    for v in (x1, x2, w1, w2, b):
        v.grad = 0.0
    o2 = (x1 * w1 + x2 * w2 + b).tanh()
    o2.backward()
    assert manual == pytest.approx([v.grad for v in (x1, x2, w1, w2, b)], rel=1e-12)
    assert manual[0] == pytest.approx(-1.5, rel=1e-6)      # the lecture's numbers


# -- ops added the lecture's way: Value(data, _children, _op) and a _backward closure ---

def lecture_exp(self):
    x = self.data
    out = Value(math.exp(x), (self,), "exp")

    def _backward():
        self.grad += out.data * out.grad
    out._backward = _backward
    return out


def lecture_tanh(self):
    x = self.data
    t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
    out = Value(t, (self,), "tanh")

    def _backward():
        self.grad += (1 - t ** 2) * out.grad
    out._backward = _backward
    return out


def lecture_add(self, other):
    out = Value(self.data + other.data, (self, other), "+")

    def _backward():
        self.grad += 1.0 * out.grad
        other.grad += 1.0 * out.grad
    out._backward = _backward
    return out


def test_three_argument_constructor_and_closures_give_micrograds_gradients():
    a, b = Value(0.5), Value(-2.0)
    y = lecture_add(lecture_exp(a) * b, a * 3)
    assert y._op == "+" and lecture_exp(a)._op == "exp"
    y.backward()
    assert a.grad == pytest.approx(3 + b.data * math.exp(0.5), rel=1e-15)
    assert b.grad == pytest.approx(math.exp(0.5), rel=1e-15)
    a.grad = 0.0
    z = lecture_add(a, a)                     # the same child twice
    (z * z).backward()
    assert a.grad == pytest.approx(8 * a.data, rel=1e-15)


def test_a_user_defined_op_trains_in_a_loop_like_the_lecture():
    """The lecture's user-written neuron with its own tanh, 20 steps of gradient descent."""
    random.seed(3)
    xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]
    w = [Value(random.uniform(-1, 1)) for _ in range(3)]
    b = Value(random.uniform(-1, 1))
    params = w + [b]

    def neuron(x, tanh):
        act = sum((wi * xi for wi, xi in zip(w, x)), b)
        return tanh(act)

    def run(tanh):
        for p, v in zip(params, start):
            p.data = v
        losses = []
        for _ in range(20):
            loss = sum((neuron(x, tanh) - y) ** 2 for x, y in zip(xs, ys))
            for p in params:
                p.grad = 0.0
            loss.backward()
            for p in params:
                p.data += -0.05 * p.grad
            losses.append(loss.data)
        return losses

    start = [p.data for p in params]
    custom = run(lecture_tanh)
    builtin = run(Value.tanh)
    assert custom == pytest.approx(builtin, rel=1e-12)
    assert custom[-1] < custom[0] / 2


def test_manual_backprop_through_custom_nodes():
    a = Value(0.3)
    e = lecture_exp(a)
    o = e * 2.0
    o.grad = 1.0
    o._backward()
    e._backward()
    assert a.grad == pytest.approx(2 * math.exp(0.3), rel=1e-15)


def test_custom_rows_in_large_graphs_run_their_closures_in_order():
    with Tape():
        x = Value(0.001)
        h = x
        for _ in range(3000):                  # too large for the small-graph path
            h = h * 1.0001 + 0.0001
        y = lecture_exp(h) * 2.0
        y.backward()
        got = x.grad
        x.grad = 0.0
        y2 = h.exp() * 2.0
        y2.backward()
    assert got == pytest.approx(x.grad, rel=1e-12)


def test_custom_rows_cannot_be_replayed_and_misuse_is_named():
    with Tape() as t:
        x = Value(1.0)
        y = lecture_exp(x) * 2
    with pytest.raises(ValueError, match=r"^row 1 was made with Value\(data, _children, "
                                         r"_op\): the user computed its value, so a replay "
                                         r"cannot recompute it"):
        t.forward()
    with pytest.raises(ValueError, match="_backward can be set only on a Value made with"):
        (x * 2)._backward = lambda: None
    with pytest.raises(TypeError, match=r"_backward must be callable, got int"):
        lecture_exp(x)._backward = 3
    with pytest.raises(TypeError, match=r"_children\[1\] must be a Value, got 2\.0"):
        Value(3.0, (x, 2.0), "+")
    with pytest.raises(NotImplementedError, match="takes one or two children, got 3"):
        Value(3.0, (x, x, x), "sum3")
    assert y.data == pytest.approx(2 * math.e)


def test_tapes_pickle_round_trip_and_replay():
    with Tape("pickled") as t:
        x = Value(2.0, label="x")
        from tapegrad import scope
        with scope("layer"):
            y = (x * 3 + 1).tanh()
        y.backward()
    again = pickle.loads(pickle.dumps(t))
    assert again.name == "pickled" and len(again) == len(t)
    for column in ("opcodes", "args", "consts", "values", "grads", "levels", "scope_ids"):
        assert np.array_equal(getattr(again, column), getattr(t, column)), column
    assert again.labels == {0: "x"} and again.scope_of(y.row) == "layer"
    leaf = again.value(0)
    leaf.data = 1.0
    again.forward()
    assert again.value(y.row).data == pytest.approx(math.tanh(4.0), rel=1e-15)
    assert x.data == 2.0                      # the original is untouched
