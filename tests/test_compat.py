"""micrograd idioms from real code: attributes on Values, copies, pickles, NumPy arrays."""

from __future__ import annotations

import copy
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
