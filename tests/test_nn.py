"""micrograd's modules: constructors, reprs, initialisation, outputs."""

import random

import micrograd.nn as mnn
import pytest

from tapegrad import Tape, Value
from tapegrad.nn import MLP, Layer, Module, Neuron


def test_reprs_and_parameter_counts_match_micrograd():
    random.seed(0)
    ours = MLP(2, [16, 16, 1])
    random.seed(0)
    theirs = mnn.MLP(2, [16, 16, 1])
    assert repr(ours) == repr(theirs)
    assert len(ours.parameters()) == len(theirs.parameters()) == 337
    assert repr(Neuron(3)) == "ReLUNeuron(3)"
    assert repr(Neuron(3, nonlin=False)) == "LinearNeuron(3)"
    assert repr(Layer(2, 2)) == "Layer of [ReLUNeuron(2), ReLUNeuron(2)]"
    assert Module().parameters() == []


def test_same_seed_gives_micrograds_parameters():
    random.seed(1337)
    ours = MLP(3, [4, 4, 1])
    random.seed(1337)
    theirs = mnn.MLP(3, [4, 4, 1])
    assert [p.data for p in ours.parameters()] == [p.data for p in theirs.parameters()]
    biases = [n.b.data for layer in ours.layers for n in layer.neurons]
    assert biases == [0.0] * 9


def test_forward_and_gradients_match_micrograd():
    random.seed(42)
    ours = MLP(3, [5, 4, 1])
    random.seed(42)
    theirs = mnn.MLP(3, [5, 4, 1])
    x = [0.5, -1.2, 2.0]
    with Tape():
        out = ours([Value(v) for v in x])
        out.backward()
    ref = theirs([mnn.Value(v) for v in x])
    ref.backward()
    assert out.data == pytest.approx(ref.data, rel=1e-14)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert p.grad == pytest.approx(q.grad, rel=1e-12, abs=1e-15)


def test_layer_shapes_and_linear_last_layer():
    model = MLP(2, [3, 1])
    out = model([1.0, 2.0])
    assert isinstance(out, Value)              # one neuron: a bare Value
    assert isinstance(Layer(2, 3)([1.0, 2.0]), list)
    assert [n.nonlin for n in model.layers[0].neurons] == [True] * 3
    assert model.layers[-1].neurons[0].nonlin is False


def test_zero_grad():
    model = MLP(2, [3, 1])
    model([1.0, -1.0]).backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())


def test_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match="positive int number of inputs"):
        Neuron(0)
    with pytest.raises(ValueError, match="positive int number of outputs"):
        Layer(2, 0)
    with pytest.raises(ValueError, match=r"ReLUNeuron\(2\) takes 2 inputs, got 3"):
        Neuron(2)([1.0, 2.0, 3.0])
