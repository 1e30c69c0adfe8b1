"""micrograd's modules: constructors, reprs, initialisation, outputs; activations,
name scopes, save/load."""

import math
import random

import micrograd.nn as mnn
import numpy as np
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


# ---------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------

def test_nonlin_names_reprs_and_attributes():
    cases = [(True, "relu", True, "ReLUNeuron(2)"), ("relu", "relu", True, "ReLUNeuron(2)"),
             (False, "linear", False, "LinearNeuron(2)"),
             ("linear", "linear", False, "LinearNeuron(2)"),
             ("tanh", "tanh", "tanh", "TanhNeuron(2)"),
             ("sigmoid", "sigmoid", "sigmoid", "SigmoidNeuron(2)")]
    for arg, activation, nonlin, text in cases:
        n = Neuron(2, nonlin=arg)
        assert (n.activation, n.nonlin, repr(n)) == (activation, nonlin, text)
    assert repr(Layer(3, 2, nonlin="tanh")) == "Layer of [TanhNeuron(3), TanhNeuron(3)]"
    model = MLP(2, [3, 2, 1], nonlin="sigmoid")
    assert repr(model) == ("MLP of [Layer of [SigmoidNeuron(2), SigmoidNeuron(2), "
                           "SigmoidNeuron(2)], Layer of [SigmoidNeuron(3), SigmoidNeuron(3)], "
                           "Layer of [LinearNeuron(2)]]")
    n = Neuron(2)
    n.nonlin = "tanh"                         # setting the attribute changes the neuron
    assert repr(n) == "TanhNeuron(2)"


def test_bad_nonlin_is_rejected_before_any_weight_is_drawn():
    for bad in ("gelu", "ReLU", 1, None, 0.0):
        random.seed(3)
        state = random.getstate()
        for make, args in ((Neuron, (2,)), (Layer, (2, 3)), (MLP, (2, [3, 1]))):
            with pytest.raises(ValueError, match=r"nonlin must be True or 'relu', False or "
                                                 r"'linear', 'tanh' or 'sigmoid'; got"):
                make(*args, nonlin=bad)
            assert random.getstate() == state
    with pytest.raises(ValueError, match="nonlin must be"):
        Neuron(2).nonlin = "swish"


@pytest.mark.parametrize("nonlin, act, dact", [
    ("relu", lambda s: max(s, 0.0), lambda s, o: float(s > 0)),
    ("linear", lambda s: s, lambda s, o: 1.0),
    ("tanh", math.tanh, lambda s, o: 1 - o * o),
    ("sigmoid", lambda s: 1 / (1 + math.exp(-s)), lambda s, o: o * (1 - o)),
])
def test_neuron_activation_values_and_gradients(nonlin, act, dact):
    random.seed(7)
    n = Neuron(3, nonlin=nonlin)
    n.b.data = 0.25
    x = [Value(0.5), Value(-1.5), Value(2.0)]
    with Tape():
        out = n(x)
        out.backward()
    s = 0.25 + sum(w.data * xi.data for w, xi in zip(n.w, x))
    assert s != 0
    expected = act(s)
    assert out.data == pytest.approx(expected, rel=1e-15, abs=1e-300)
    d = dact(s, expected)
    assert [w.grad for w in n.w] == pytest.approx([d * xi.data for xi in x], rel=1e-14)
    assert n.b.grad == pytest.approx(d, rel=1e-14)
    assert [xi.grad for xi in x] == pytest.approx([d * w.data for w in n.w], rel=1e-14)


@pytest.mark.parametrize("nonlin", ["tanh", "sigmoid", "relu"])
def test_mlp_gradients_match_finite_differences(nonlin):
    random.seed(11)
    model = MLP(3, [4, 3, 1], nonlin=nonlin)
    x = [0.3, -0.8, 1.1]

    def f() -> float:
        return model(x).data

    with Tape():
        model.zero_grad()
        model(x).backward()
    h = 1e-6
    for p in model.parameters():
        p0 = p.data
        p.data = p0 + h
        up = f()
        p.data = p0 - h
        down = f()
        p.data = p0
        assert p.grad == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-8)
    assert any(abs(p.grad) > 1e-3 for p in model.parameters())


def test_relu_and_linear_match_micrograd_neuron_by_neuron():
    for nonlin in (True, False):
        random.seed(5)
        ours = Neuron(4, nonlin=nonlin)
        random.seed(5)
        theirs = mnn.Neuron(4, nonlin=nonlin)
        x = [0.9, -0.4, 0.2, 0.7]
        with Tape():
            out = ours([Value(v) for v in x])
            out.backward()
        ref = theirs([mnn.Value(v) for v in x])
        ref.backward()
        assert out.data == ref.data
        assert [p.grad for p in ours.parameters()] == [p.grad for p in theirs.parameters()]


def test_mlp_hidden_layers_use_nonlin_and_the_last_is_linear():
    model = MLP(2, [3, 3, 2], nonlin="tanh")
    acts = [[n.activation for n in layer.neurons] for layer in model.layers]
    assert acts == [["tanh"] * 3, ["tanh"] * 3, ["linear"] * 2]
    assert [n.activation for n in MLP(2, [1], nonlin="tanh").layers[0].neurons] == ["linear"]
    with pytest.raises(ValueError, match="at least one layer size"):
        MLP(2, [])
    with pytest.raises(ValueError, match=r"MLP needs a positive int number of outputs in every "
                                         r"layer \(nouts\), got 0"):
        MLP(2, [3, 0, 1])
    with pytest.raises(ValueError, match="MLP needs a positive int number of inputs"):
        MLP(0, [3])


# ---------------------------------------------------------------------------------------
# name scopes
# ---------------------------------------------------------------------------------------

def test_rows_carry_layer_and_neuron_paths():
    with Tape() as t:
        model = MLP(2, [3, 2, 1])              # its leaves: outside any scope
        x = [Value(1.0), Value(-0.5)]
        h = model.layers[0](x)
        out = model(x)
    assert [t.scope_of(v.row) for v in h] == ["layer0/neuron0", "layer0/neuron1",
                                              "layer0/neuron2"]
    assert t.scope_of(out.row) == "layer2/neuron0"
    assert t.scope_of(x[0].row) == ""
    paths = {t.scope_names[i] for i in set(t.scope_ids.tolist())}
    assert paths == {"", "layer0/neuron0", "layer0/neuron1", "layer0/neuron2",
                     "layer1/neuron0", "layer1/neuron1", "layer2/neuron0"}
    # every recorded row of a neuron is in its scope: 2 mul + 2 add + relu each
    ids = t.scope_ids
    neuron = t.scope_names.index("layer0/neuron1")
    assert int((ids == neuron).sum()) == 2 * 5      # called twice


def test_standalone_modules_renaming_and_outer_scopes():
    from tapegrad import scope

    with Tape() as t:
        a = Neuron(2)([1.0, 2.0])
        b = Layer(2, 2)([1.0, 2.0])
        layer = Layer(2, 1)
        layer.name = "encoder"
        c = layer([1.0, 2.0])
        with scope("model"):
            d = MLP(2, [1])([1.0, 2.0])
    assert t.scope_of(a.row) == "neuron"
    assert [t.scope_of(v.row) for v in b] == ["layer/neuron0", "layer/neuron1"]
    assert t.scope_of(c.row) == "encoder/neuron0"
    assert t.scope_of(d.row) == "model/layer0/neuron0"
    with pytest.raises(TypeError, match="scope name must be a non-empty str"):
        layer.name = ""


def test_scopes_from_several_threads():
    import threading

    model = MLP(2, [3, 1])
    seen: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def work(tag: str) -> None:
        from tapegrad import scope

        with Tape() as t, scope(tag):
            barrier.wait()
            outs = [model([0.5, float(i)]) for i in range(50)]
        seen[tag] = {t.scope_of(o.row) for o in outs}

    threads = [threading.Thread(target=work, args=(tag,)) for tag in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen == {"a": {"a/layer1/neuron0"}, "b": {"b/layer1/neuron0"}}


# ---------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------

def data(model: Module) -> list[float]:
    return [p.data for p in model.parameters()]


def test_save_load_round_trip(tmp_path):
    random.seed(1)
    a = MLP(2, [16, 16, 1])
    for p in a.parameters():
        p.data += 0.5                      # biases non-zero too
    path = tmp_path / "model.params"
    a.save(path)
    assert path.exists() and not (tmp_path / "model.params.npz").exists()
    random.seed(2)
    b = MLP(2, [16, 16, 1])
    assert data(b) != data(a)
    assert b.load(path) is b
    assert data(b) == data(a)
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == ["__architecture__", "__format__", "layer0/W", "layer0/b",
                                   "layer1/W", "layer1/b", "layer2/W", "layer2/b"]
        assert str(f["__architecture__"]) == "MLP(2, [16, 16, 1], nonlin='relu')"
        assert f["layer0/W"].shape == (16, 2) and f["layer0/W"].dtype == np.float64
        assert f["layer2/b"].shape == (1,)
        assert f["layer1/W"][3].tolist() == [w.data for w in a.layers[1].neurons[3].w]
        assert f["layer1/b"].tolist() == [n.b.data for n in a.layers[1].neurons]


def test_save_load_neuron_layer_and_custom_module(tmp_path):
    class Pair(Module):
        def __init__(self) -> None:
            self.u, self.v = Value(1.5), Value(-2.5)

        def parameters(self) -> list[Value]:
            return [self.u, self.v]

    for make in (lambda: Neuron(3, nonlin="tanh"), lambda: Layer(3, 2), Pair):
        src, dst = make(), make()
        for i, p in enumerate(src.parameters()):
            p.data = 0.125 * i - 1
        src.save(tmp_path / "m.npz")
        dst.load(tmp_path / "m.npz")
        assert data(dst) == data(src)
    with np.load(tmp_path / "m.npz") as f:
        assert f["parameters"].tolist() == [-1.0, -0.875]
        assert str(f["__architecture__"]) == "Pair with 2 parameters"


def test_load_wrong_architecture_raises_and_leaves_the_model_untouched(tmp_path):
    MLP(2, [16, 16, 2]).save(tmp_path / "two.npz")
    MLP(2, [8, 1]).save(tmp_path / "small.npz")
    MLP(2, [16, 16, 1], nonlin="tanh").save(tmp_path / "tanh.npz")
    Layer(2, 16).save(tmp_path / "layer.npz")
    model = MLP(2, [16, 16, 1])
    before = data(model)
    # the first layers match: only the last one differs, and nothing is written
    with pytest.raises(ValueError, match=r"another architecture: expected MLP\(2, \[16, 16, 1\], "
                                         r"nonlin='relu'\), found MLP\(2, \[16, 16, 2\], nonlin="
                                         r"'relu'\) \(tensor 'layer2/W': expected shape "
                                         r"\(1, 16\), found \(2, 16\)\)"):
        model.load(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=r"found MLP\(2, \[8, 1\], nonlin='relu'\) \(tensors: "
                                         r"expected \['layer0/W', 'layer0/b', 'layer1/W', "
                                         r"'layer1/b', 'layer2/W', 'layer2/b'\], found "
                                         r"\['layer0/W', 'layer0/b', 'layer1/W', 'layer1/b'\]\)"):
        model.load(tmp_path / "small.npz")
    with pytest.raises(ValueError, match=r"another architecture: expected MLP\(2, \[16, 16, "
                                         r"1\], nonlin='relu'\), found MLP\(2, \[16, 16, 1\], "
                                         r"nonlin='tanh'\)$"):
        model.load(tmp_path / "tanh.npz")
    with pytest.raises(ValueError, match=r"found Layer\(2, 16, nonlin='relu'\) \(tensors"):
        model.load(tmp_path / "layer.npz")
    assert data(model) == before


def test_load_missing_and_corrupt_files(tmp_path):
    model = MLP(2, [3, 1])
    before = data(model)
    with pytest.raises(FileNotFoundError, match="no parameter file at"):
        model.load(tmp_path / "nope.npz")
    model.save(tmp_path / "good.npz")
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "junk.npz").write_bytes(b"this is not an archive" * 20)
    (tmp_path / "half.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "single.npy", np.zeros(3))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    np.savez(tmp_path / "objects.npz", __format__=np.array("tapegrad.nn/1"),
             __architecture__=np.array("x"), w=np.array([{"a": 1}], dtype=object))
    arch = np.array("MLP(2, [3, 1], nonlin='relu')")
    good = dict(np.load(tmp_path / "good.npz"))
    np.savez(tmp_path / "future.npz", **{**good, "__format__": np.array("tapegrad.nn/2")})
    np.savez(tmp_path / "text.npz", **{**good, "layer1/b": np.array(["x"]),
                                       "__architecture__": arch})
    cases = {
        "future.npz": r"has format 'tapegrad.nn/2'; this tapegrad reads 'tapegrad.nn/1'",
        "text.npz": r"tensor 'layer1/b' must hold real numbers, found dtype <U1",
        "junk.npz": "not an .npz archive",
        "half.npz": "not an .npz archive",
        "empty.npz": "not an .npz archive",
        "single.npy": r"single array \(.npy\)",
        "other.npz": "not one written by Module.save",
        "objects.npz": "cannot read its arrays",
    }
    for name, why in cases.items():
        with pytest.raises(ValueError, match=why) as info:
            model.load(tmp_path / name)
        assert "is not a parameter file written by Module.save" in str(info.value) or \
            name in ("other.npz", "future.npz", "text.npz")
        err = info.value           # no zipfile/pickle traceback chained to it
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert data(model) == before
