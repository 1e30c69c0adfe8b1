"""The moons demo: micrograd's numbers, its flags, and the paths without optional packages."""

import gc
import importlib.util
import random
import sys
from pathlib import Path

import micrograd.engine as mengine
import micrograd.nn as mnn
import pytest

from tapegrad import Value
from tapegrad.nn import MLP
from tapegrad.optim import SGD

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "moons.py"
if not EXAMPLE.is_file():
    pytest.skip(f"{EXAMPLE} is not here: these tests need the examples/ folder of a "
                "checkout or of the sdist", allow_module_level=True)


@pytest.fixture(scope="module")
def moons():
    spec = importlib.util.spec_from_file_location("moons_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def micrograd_losses(steps: int) -> list[float]:
    """micrograd's demo, verbatim, for ``steps`` steps (its gc off: same numbers, faster)."""
    import numpy as np
    from sklearn.datasets import make_moons

    np.random.seed(1337)
    random.seed(1337)
    X, y = make_moons(n_samples=100, noise=0.1)
    y = y * 2 - 1
    model = mnn.MLP(2, [16, 16, 1])
    out = []
    was = gc.isenabled()
    gc.disable()
    try:
        for k in range(steps):
            inputs = [list(map(mengine.Value, xrow)) for xrow in X]
            scores = list(map(model, inputs))
            losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
            data_loss = sum(losses) * (1.0 / len(losses))
            reg_loss = 1e-4 * sum(p * p for p in model.parameters())
            total_loss = data_loss + reg_loss
            model.zero_grad()
            total_loss.backward()
            learning_rate = 1.0 - 0.9 * k / 100
            for p in model.parameters():
                p.data -= learning_rate * p.grad
            out.append(float(total_loss.data))
    finally:
        if was:
            gc.enable()
    return out


def test_first_five_steps_match_micrograd(moons):
    X, y = moons.make_data(1337)
    model = MLP(2, [16, 16, 1])
    opt = moons.make_optimizer("sgd", model)
    history = []
    for k in range(5):                  # the first 5 of micrograd's 100 steps
        opt.lr = moons.learning_rate(moons.SGD_LR, k, 100)
        history.append(moons.train_step(model, X, y, opt))
    ours = [loss for loss, _ in history]
    theirs = micrograd_losses(5)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert ours[0] == 0.8958441028683222 == theirs[0]      # same forward: same bits
    assert [acc for _, acc in history] == [0.5, 0.81, 0.77, 0.82, 0.84]


def test_train_prints_micrograds_progress_lines(moons, capsys):
    X, y = moons.make_data(1337)
    model = MLP(2, [16, 16, 1])
    opt = moons.make_optimizer("sgd", model)
    history = moons.train(model, X, y, opt, steps=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"step {k} loss {loss}, accuracy {acc * 100}%"
                     for k, (loss, acc) in enumerate(history)]
    assert lines[0] == "step 0 loss 0.8958441028683222, accuracy 50.0%"
    assert opt.lr == 1.0 - 0.9 * 1 / 2          # the schedule spans the run


def test_sgd_optimizer_is_micrograds_loop_bit_for_bit(moons):
    X, y = moons.make_data(1337)
    a = MLP(2, [16, 16, 1])
    random.seed(1337)
    b = MLP(2, [16, 16, 1])
    opt = SGD(a.parameters(), lr=1.0)
    for k in range(3):
        opt.lr = moons.learning_rate(1.0, k, 100)
        la, _ = moons.train_step(a, X, y, opt)
        total_loss, _ = moons.loss(b, X, y)
        b.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in b.parameters():
            p.data -= learning_rate * p.grad
        assert la == total_loss.data
        assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]


def test_main_trains_and_writes_the_picture(moons, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert moons.main(["--steps", "3", "--out", out]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "number of parameters 337" in text
    assert text.count("\nstep ") == 3 and "step 2 loss " in text
    assert f"decision boundary written to {out}" in text


def test_main_with_adam(moons, tmp_path, capsys):
    moons.main(["--steps", "2", "--optimizer", "adam", "--seed", "7",
                "--out", str(tmp_path / "a.png")])
    text = capsys.readouterr().out
    assert "Adam(337 params, lr=0.0275" in text          # 0.05 * (1 - 0.9 * 1 / 2)
    assert (tmp_path / "a.png").exists()


def test_main_without_matplotlib_still_trains_and_says_how_to_get_it(moons, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib fails
    assert moons.main(["--steps", "1", "--out", str(tmp_path / "m.png")]) == 0
    text = capsys.readouterr().out
    assert "step 0 loss 0.8958441028683222, accuracy 50.0%" in text
    assert f"matplotlib is missing; {moons.INSTALL_HINT}" in text
    assert moons.INSTALL_HINT == 'pip install "tapegrad[examples]"'
    assert not (tmp_path / "m.png").exists()


def test_main_without_scikit_learn_exits_with_a_hint(moons, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit, match=r'needs scikit-learn.*pip install "tapegrad\[examples\]"'):
        moons.main(["--steps", "1", "--out", str(tmp_path / "m.png")])


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--out", "/no/such/folder/m.png"], "folder /no/such/folder does not exist"),
])
def test_main_rejects_bad_flags(moons, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        moons.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_the_adam_learning_rate(moons, capsys):
    with pytest.raises(SystemExit):
        moons.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: moons.py [-h] [--steps STEPS]")
    assert "adam: Adam, lr 0.05 decaying to 0.005" in text


def test_loss_is_a_value_and_accuracy_a_fraction(moons):
    X, y = moons.make_data(1337)
    total, acc = moons.loss(MLP(2, [4, 1]), X[:10], y[:10])
    assert isinstance(total, Value) and 0.0 <= acc <= 1.0


def test_replay_mode_prints_the_same_losses_as_recording(moons, tmp_path, capsys):
    assert moons.main(["--steps", "6", "--out", tmp_path / "eager.png"]) == 0
    eager = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert moons.main(["--steps", "6", "--replay", "--out", tmp_path / "replay.png"]) == 0
    out = capsys.readouterr().out
    replayed = [line for line in out.splitlines() if line.startswith("step")]
    assert len(eager) == 6 and replayed == eager          # same losses, bit for bit
    assert "(replayed)" in out and (tmp_path / "replay.png").read_bytes()[:4] == b"\x89PNG"
