"""Bulk recording (nn layers, tapegrad.dot, tapegrad.sum) writes the scalar loop's rows.

The reference is always the scalar path itself: each neuron called on its own inside
the layer's scope, ``sum(map(mul, ws, xs), start)``, the builtin ``sum``. Rows must be
equal bit for bit: opcodes, operands, immediates, values, levels, ``low`` and scopes.
"""

from __future__ import annotations

import contextlib
import math
import operator
import random

import numpy as np
import pytest

import tapegrad
from tapegrad import Tape, Value, detect_anomaly, dot, scope
from tapegrad.nn import MLP, Layer, Neuron


def tape_rows(t: Tape) -> dict:
    cols = t.columns()
    rows = {k: getattr(cols, k).copy() for k in cols._fields if k != "grad"}
    rows["scope"] = [t.scope_names[i] for i in t.scope_ids]
    return rows


def assert_same_rows(a: Tape, b: Tape) -> None:
    ra, rb = tape_rows(a), tape_rows(b)
    assert len(a) == len(b)
    for key in ra:
        if key == "scope":
            assert ra[key] == rb[key]
        else:
            # bit patterns: -0.0 differs from 0.0, nan equals nan
            x, y = np.asarray(ra[key]), np.asarray(rb[key])
            if x.dtype.kind == "f":
                x, y = x.view(np.int64), y.view(np.int64)
            assert np.array_equal(x, y), key


def layer_pair(nin: int, nout: int, nonlin: object, seed: int = 0):
    """Two layers with the same weights, on the current tape: record them on that tape
    (weights of another tape go through the loop until their mirror rows exist)."""
    random.seed(seed)
    a = Layer(nin, nout, nonlin=nonlin)
    random.seed(seed)
    b = Layer(nin, nout, nonlin=nonlin)
    return a, b


@contextlib.contextmanager
def bulk_calls():
    """A list of the bulk recordings of layers meanwhile: per call of the recorder, how
    many layers it wrote (0: it left them to the loop)."""
    from tapegrad import _record
    real, calls = _record.record_layers, []

    def spy(t, layers, x, stacks=None):
        out = real(t, layers, x, stacks)
        calls.append(0 if out is None else len(layers))
        return out

    _record.record_layers = spy
    try:
        yield calls
    finally:
        _record.record_layers = real


def neuron_by_neuron(layer: Layer, x):
    """The scalar path: what Layer.__call__ records without bulk recording."""
    with scope(layer.name):
        out = [n(x) for n in layer.neurons]
    return out[0] if len(out) == 1 else out


@pytest.mark.parametrize("nonlin", ["relu", "linear", "tanh", "sigmoid"])
@pytest.mark.parametrize("inputs", ["leaves", "computed", "mixed", "floats", "ints"])
def test_layer_rows_equal_the_neuron_loop(nonlin, inputs):
    rng = np.random.default_rng(3)
    xs = rng.normal(size=7).tolist()
    results = []
    for bulk in (True, False):
        with Tape() as t, bulk_calls() as calls:
            layer = layer_pair(7, 5, nonlin)[0]
            call = layer if bulk else (lambda x, layer=layer: neuron_by_neuron(layer, x))
            if inputs == "leaves":
                x = [Value(v) for v in xs]
            elif inputs == "computed":
                x = [(Value(v) * 2.0).tanh() + k for k, v in enumerate(xs)]
            elif inputs == "mixed":                   # leaves and computed rows
                x = [Value(v) if k % 2 else Value(v) * 3.0 for k, v in enumerate(xs)]
            elif inputs == "floats":
                x = list(xs)
            else:
                x = list(range(-3, 4))
            out = call(x)
            loss = sum(o * o for o in out)
            loss.backward()
        assert calls == ([1] if bulk else [])
        results.append((t, [o.data for o in out], [p.grad for p in layer.parameters()]))
    (ta, da, ga), (tb, db, gb) = results
    assert_same_rows(ta, tb)
    assert da == db
    assert ga == gb


def test_relu_keeps_negative_zero_and_nan_like_the_scalar_rule():
    x = [-0.0, -0.0, -0.0, -0.0]
    tapes = []
    for bulk in (True, False):
        with Tape() as t, bulk_calls() as calls:
            layer = layer_pair(4, 4, "relu")[0]
            for n in layer.neurons:
                n.w = [Value(1.0), Value(1.0), Value(1.0), Value(1.0)]
            layer.neurons[1].b.data = -0.0
            layer.neurons[2].b.data = math.nan
            layer.neurons[3].b.data = -5.0
            out = layer(x) if bulk else neuron_by_neuron(layer, x)
        assert calls == ([1] if bulk else [])
        tapes.append(t)
        if bulk:
            a = out
    assert_same_rows(*tapes)
    assert math.copysign(1.0, a[1].data) == -1.0 and math.isnan(a[2].data) and a[3].data == 0


def test_mlp_rows_scopes_and_gradients_equal_the_scalar_path():
    random.seed(5)
    model = MLP(3, [16, 16, 1])
    random.seed(5)
    ref = MLP(3, [16, 16, 1])
    xs = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]
    with Tape() as ta, bulk_calls() as calls:     # a model of the default tape:
        loss = sum((model([Value(v) for v in x]) - 1.0) ** 2 for x in xs)
        loss.backward()
    assert calls == [0, 0, 0, 0, 3]              # the loop, then bulk once mirrored
    with Tape() as tb:
        def ref_model(x):
            for layer in ref.layers:
                x = neuron_by_neuron(layer, x)
            return x
        ref_loss = sum((ref_model([Value(v) for v in x]) - 1.0) ** 2 for x in xs)
        ref_loss.backward()
    assert_same_rows(ta, tb)
    assert "layer1/neuron15" in ta.scope_names
    assert [p.grad for p in model.parameters()] == [p.grad for p in ref.parameters()]


@pytest.mark.parametrize("nonlin", ["relu", "tanh"])
def test_mlp_calls_equal_the_scalar_path_as_inputs_and_layers_change(nonlin):
    """An MLP writes all its layers' rows at once from a layout it keeps between calls
    (per levels of the inputs). Calls with leaves, computed inputs of other levels,
    floats and ints, and with a middle layer's weight, bias and activations and the last
    layer's biases (numbers, then Values) changed in between, write the rows the layers
    called neuron by neuron write."""
    def inputs(k):
        base = [0.5 - 0.25 * k, -1.0, 2.0 + k]
        return ([Value(v) for v in base],                         # leaves
                [Value(v) * (k + 1.5) for v in base],             # level 1
                [(Value(v) * 2.0).tanh() + k for v in base],      # level 3
                base, [k, -2, 3])                                 # floats, ints

    def change(model):
        middle = model.layers[1].neurons
        middle[3].w[2] = Value(0.75)
        middle[0].b = Value(-0.5)
        for n in middle:
            n.activation = "sigmoid" if n.activation != "sigmoid" else nonlin
        for k, n in enumerate(model.layers[2].neurons):    # biases as numbers, then back
            n.b = 0.25 * k if type(n.b) is Value else Value(0.5)

    results = []
    for bulk in (True, False):
        random.seed(7)
        model = MLP(3, [16, 16, 2], nonlin=nonlin)
        with Tape() as t, bulk_calls() as calls:
            def call(x, model=model, bulk=bulk):
                if bulk:
                    return model(x)
                for layer in model.layers:
                    x = neuron_by_neuron(layer, x)
                return x
            outs = []
            for k in range(3):
                # the weights are the default tape's: the first call mirrors them
                outs += [call(x) for x in inputs(k)]
                change(model)
            loss = sum(o * o for out in outs for o in out)
            loss.backward()
        assert calls == ([0] * 4 + [3] * 14 if bulk else [])   # first: MLP, then each layer
        results.append((t, [o.data for out in outs for o in out],
                        [p.grad for p in model.parameters() if type(p) is Value]))
    (ta, da, ga), (tb, db, gb) = results
    assert_same_rows(ta, tb)
    assert da == db and ga == gb and any(ga)


def test_an_mlp_with_a_layer_of_the_users_own_calls_it():
    """The MLP records its layers in one go only when they are plain Layers: a layer
    subclass (or any module) put in ``layers`` is called, and the others still match."""
    class Scaled(Layer):
        def __call__(self, x):
            return [v * 0.5 for v in super().__call__(x)]

    with Tape() as t, bulk_calls() as calls:
        random.seed(4)
        model = MLP(3, [16, 16, 1])
        random.seed(4)
        ref = MLP(3, [16, 16, 1])
        for m in (model, ref):
            scaled = Scaled(16, 16)
            scaled.neurons = m.layers[1].neurons
            scaled.name = "layer1"
            m.layers[1] = scaled
        x = [Value(0.5), Value(-1.0), Value(2.0)]
        out = model(x)
        want = x
        for layer in ref.layers:
            want = layer(want)
    assert calls == [1, 1, 1, 1, 1, 1]            # layer by layer, the subclass too
    assert out.data == want.data and len(t) > 0


def test_an_mlp_whose_layer_sizes_do_not_chain_says_so():
    """A layer whose neurons take fewer inputs than the layer before gives: the MLP
    leaves it to the layers, and the neuron names the mismatch (as layer by layer)."""
    with Tape():
        random.seed(6)
        model = MLP(3, [16, 16, 1])
        model.layers[1].neurons = [Neuron(8) for _ in range(16)]
        with pytest.raises(ValueError, match=r"Neuron\(8\) takes 8 inputs, got 16"):
            model([Value(0.5), Value(-1.0), Value(2.0)])


def test_a_model_deep_copied_after_a_call_records_like_the_original():
    """The bulk caches hold the tape; a deep copy (or a pickled copy) of a model starts
    with empty caches and its own parameters, and records the same values."""
    import copy
    import pickle
    random.seed(8)
    model = MLP(2, [16, 16, 1])
    x = [0.25, -0.5]
    first = model([Value(v) for v in x]).data
    twin = copy.deepcopy(model)
    assert twin([Value(v) for v in x]).data == first
    assert pickle.loads(pickle.dumps(model))([Value(v) for v in x]).data == first
    twin.layers[-1].neurons[0].b.data += 1.0           # its own parameters
    assert model([Value(v) for v in x]).data == first != twin([Value(v) for v in x]).data


def test_bulk_layer_results_are_values_with_micrograd_graph_walks():
    random.seed(1)
    layer = Layer(4, 6)
    with Tape():
        out = layer([Value(1.0), Value(2.0), Value(-1.0), Value(0.5)])
        o = out[2]
        assert o._op == "ReLU"
        (acc,) = o._prev
        assert acc._op == "+"
        assert {c._op for c in acc._prev} == {"+", "*"}


def test_changes_to_the_layer_are_seen_between_calls():
    """The weights' rows are memoized per layer; a new weight Value, a new bias, a
    renamed neuron and new data all show in the next call's rows."""
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    results = []
    for bulk in (True, False):
        with Tape() as t, bulk_calls() as calls:
            layer = layer_pair(5, 4, "tanh")[0]
            call = layer if bulk else (lambda x, layer=layer: neuron_by_neuron(layer, x))
            call(x)                           # rows of the weights memoized
            layer.neurons[2].w[1] = Value(7.0)    # a new weight Value
            layer.neurons[0].b = Value(-3.0)
            layer.neurons[3].name = "renamed"
            for p in layer.parameters():
                p.data *= 0.5                 # the optimizer's update
            out = call(x)
        assert calls == ([1, 1] if bulk else [])
        results.append((t, [v.data for v in out]))
    (ta, a), (tb, b) = results
    assert_same_rows(ta, tb)
    assert a == b
    assert "layer/renamed" in ta.scope_names


def test_weights_of_another_tape_are_recorded_in_bulk_once_mirrored():
    """A model made on the default tape, recorded on another (``with Tape()``, as for a
    replay or a Function): the first call records the loop (it adds the weights'
    mirror rows where the loop uses them), later calls write the same rows in bulk and
    read the weights' current data."""
    bulk, loop = layer_pair(6, 5, "relu")
    xs = [[0.5, -1.0, 0.25, 2.0, -0.5, 1.0], [1.5, 0.5, -0.25, 0.0, 1.0, -2.0],
          [-1.0, 0.75, 0.5, -0.5, 2.0, 0.25]]
    tapes = []
    for layer, call in ((bulk, bulk), (loop, lambda x: neuron_by_neuron(loop, x))):
        with Tape() as t, bulk_calls() as calls:
            outs = []
            for x in xs:
                outs.append(call([Value(v) for v in x]))
                for p in layer.parameters():
                    p.data *= 0.5             # seen by the next call
            loss = sum(o * o for out in outs for o in out)
            loss.backward()
        assert calls == ([0, 1, 1] if layer is bulk else [])   # the loop, then bulk
        tapes.append((t, [o.data for out in outs for o in out],
                      [p.grad for p in layer.parameters()]))
    (ta, da, ga), (tb, db, gb) = tapes
    assert_same_rows(ta, tb)
    assert da == db and ga == gb and any(ga)


def test_after_the_default_tape_compacts_rows_are_still_right():
    random.seed(2)
    model = MLP(2, [16, 16, 1])
    random.seed(2)
    ref = MLP(2, [16, 16, 1])
    t = tapegrad.current_tape()
    for _ in range(3):
        for k in range(40):                   # enough discarded rows to compact
            model([Value(0.1 * k), Value(-0.2)])
        t.compact()
        out = model([Value(0.3), Value(0.7)])
        out.backward()
        x = [Value(0.3), Value(0.7)]
        for layer in ref.layers:
            x = neuron_by_neuron(layer, x)
        x.backward()
        assert out.data == x.data
        assert [p.grad for p in model.parameters()] == [p.grad for p in ref.parameters()]
        for p, q in zip(model.parameters(), ref.parameters()):
            p.data -= 0.01 * p.grad
            q.data -= 0.01 * q.grad
            p.grad = q.grad = 0.0


class Param(Value):
    pass


class LoudNeuron(Neuron):
    calls = 0

    def __call__(self, x):
        LoudNeuron.calls += 1
        return super().__call__(x)


def test_cases_the_bulk_path_leaves_to_the_loop_still_work():
    random.seed(0)
    layer = Layer(4, 8)
    x = [1.0, 2.0, 3.0, 4.0]
    # a weight of a Value subclass, mixed inputs, a neuron subclass: the loop records
    layer.neurons[0].w[0] = Param(0.5)
    with Tape() as t:
        out = layer([Value(1.0), 2.0, Value(3.0), 4.0])
    assert len(t) > 0 and len(out) == 8
    layer.neurons[3] = LoudNeuron(4)
    layer.neurons[3].name = "neuron3"
    with Tape():
        layer(x)
    assert LoudNeuron.calls == 1
    # a computed input of another tape: the rows go there, as the loop puts them
    with Tape() as other:
        h = Value(1.0) * 2
    with Tape() as here:
        out = Layer(1, 20)([h])
    assert out[0].tape is other and len(here) > 0     # the weights' leaves, mirrored


def test_detect_anomaly_sees_each_row_of_a_layer():
    random.seed(0)
    layer = Layer(4, 8, nonlin="linear")
    layer.neurons[5].b.data = math.inf
    with Tape(), detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"add produced inf .*\[layer/neuron5\]"):
            layer([1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("n", [1, 7, 8, 50])
@pytest.mark.parametrize("kinds", ["values", "numbers_first", "numbers_second", "computed"])
@pytest.mark.parametrize("start", [0, 0.25, "value", "computed"])
def test_dot_rows_equal_the_sum_of_products(n, kinds, start):
    """Weights, inputs and starts that are leaves, computed rows or numbers: every
    column equals the loop's, ``low`` (which rows the interval search may skip) too."""
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n).tolist(), rng.normal(size=n).tolist()
    tapes, results = [], []
    for fn in (dot, lambda ws, xs, s: sum(map(operator.mul, ws, xs), s)):
        with Tape() as t:
            ws = (a if kinds == "numbers_first" else [Value(v) * 2.0 for v in a]
                  if kinds == "computed" else [Value(v) for v in a])
            xs = b if kinds == "numbers_second" else [Value(v) * 1.0 for v in b]
            s = {"value": Value(-1.5), "computed": Value(-1.5).tanh()}.get(start, start)
            out = fn(ws, xs, s)
            out.backward()
        tapes.append(t)
        results.append((out.data, [v.grad for v in (ws if kinds != "numbers_first" else xs)]))
    assert_same_rows(*tapes)
    assert results[0] == results[1]


def test_dot_checks_lengths_and_returns_a_float_for_numbers():
    with pytest.raises(ValueError, match="equal length, got 3 and 2"):
        dot([Value(1.0)] * 3, [1.0, 2.0])
    assert dot([1.0, 2.0], [3.0, 4.0], 1) == 12.0


@pytest.mark.parametrize("n", [1, 15, 16, 100])
@pytest.mark.parametrize("start", [0, -2.5, "value"])
def test_sum_rows_equal_the_builtin(n, start):
    tapes, datas = [], []
    for fn in (tapegrad.sum, sum):
        with Tape() as t:
            vals = [Value(float(k) - 40.0) * 0.1 for k in range(n)]
            s = Value(3.0) if start == "value" else start
            out = fn(vals, s)
            out.backward()
        tapes.append(t)
        datas.append((out.data, [v.grad for v in vals]))
    assert_same_rows(*tapes)
    assert datas[0] == datas[1]


def test_sum_leaves_numbers_and_empty_input_to_the_builtin():
    assert tapegrad.sum(range(10)) == 45
    assert tapegrad.sum([], 3) == 3
    assert tapegrad.sum([1.5] * 20, 0.5) == 30.5
    assert "sum" not in tapegrad.__all__      # a star import keeps the builtin
