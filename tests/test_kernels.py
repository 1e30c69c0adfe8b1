"""The optional numba kernels: choosing them, their errors, and gradients equal to the
NumPy kernels' (to 1e-12) on every kind of sweep that uses them."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import tapegrad
from tapegrad import Function, Tape, Value, _kernels
from tapegrad.nn import MLP

numba = pytest.importorskip("numba")


@pytest.fixture
def counted():
    """A list that :func:`use_numba` appends each compiled sweep to (its row count), so
    that a test knows it compared the compiled path, not the NumPy path twice."""
    previous = tapegrad.kernels()
    yield []
    tapegrad.set_kernels(previous)


def use_numba(calls: list) -> None:
    tapegrad.set_kernels("numba")
    kernel = _kernels.compiled_sweep()

    def sweep(*args):
        calls.append(args[3].size)
        return kernel(*args)
    _kernels._sweep = sweep


def both_ways(grads, calls):
    """``grads()`` on the NumPy kernels, then on the numba ones."""
    tapegrad.set_kernels("numpy")
    ref = np.asarray(grads(), float)
    use_numba(calls)
    return ref, np.asarray(grads(), float)


def assert_close(ref, out):
    assert ref.shape == out.shape
    assert np.array_equal(np.isnan(ref), np.isnan(out))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


# -- choosing the kernels ------------------------------------------------------------------

def test_set_kernels_returns_the_previous_choice_and_rejects_unknown_names():
    previous = tapegrad.set_kernels("numba")
    try:
        assert tapegrad.kernels() == "numba"
        assert tapegrad.set_kernels("numpy") == "numba"
        assert tapegrad.kernels() == "numpy"
        assert _kernels.compiled_sweep() is None
        with pytest.raises(ValueError, match=r"set_kernels: unknown kernels 'cuda'; choose one "
                                             r"of \('numpy', 'numba'\)"):
            tapegrad.set_kernels("cuda")
        with pytest.raises(ValueError, match="unknown kernels 1"):
            tapegrad.set_kernels(1)  # type: ignore[arg-type]
        assert tapegrad.kernels() == "numpy"          # unchanged by the errors
    finally:
        tapegrad.set_kernels(previous)


def test_environment_variable_chooses_the_kernels_and_a_bad_value_is_named():
    env = dict(os.environ, TAPEGRAD_KERNELS="numba")
    code = "import tapegrad; print(tapegrad.kernels())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numba"
    env["TAPEGRAD_KERNELS"] = "fortran"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert ("ValueError: environment variable TAPEGRAD_KERNELS: unknown kernels 'fortran'"
            in out.stderr)
    env["TAPEGRAD_KERNELS"] = "numba"                # asked for, but numba is missing
    hide = "import sys; sys.modules['numba'] = None; " + code
    out = subprocess.run([sys.executable, "-c", hide], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError: tapegrad's numba kernels need numba (environment variable " \
           "TAPEGRAD_KERNELS=numba, but numba is not installed)" in out.stderr
    assert 'pip install "tapegrad[numba]"' in out.stderr


def test_numba_missing_is_an_import_error_that_says_how_to_install_it(monkeypatch):
    previous = tapegrad.kernels()
    monkeypatch.setitem(sys.modules, "numba", None)          # import numba fails
    monkeypatch.delitem(sys.modules, "tapegrad._numba_kernels", raising=False)
    monkeypatch.delattr(tapegrad, "_numba_kernels", raising=False)
    with pytest.raises(ImportError, match=r'pip install "tapegrad\[numba\]"'):
        tapegrad.set_kernels("numba")
    assert tapegrad.kernels() == previous


# -- gradients equal the NumPy kernels' -----------------------------------------------------

def test_recurrence_chain_eager_backward(counted):
    """x = x * c + d over 20,000 rows: a range of rows, slot 0 partials only."""
    with Tape():
        x0 = Value(0.3)
        c = Value(1.0001)
        x = x0
        for _ in range(10_000):
            x = x * c + 1e-4
        tapegrad.set_kernels("numpy")
        x.backward()
        ref = np.array([x0.grad, c.grad])
        x0.grad = c.grad = 0.0                       # backward accumulates, as micrograd's
        use_numba(counted)
        x.backward()
        out = np.array([x0.grad, c.grad])
    assert counted
    assert_close(ref, out)
    assert out[0] == pytest.approx(1.0001 ** 10_000, rel=1e-9)


def _layered_dag(n_leaves: int, layers: int, seed: int):
    """Every differentiable op, each reading the previous layer and a random earlier
    node; operands kept in the ops' domains."""
    rng = random.Random(seed)
    leaves = [Value(rng.uniform(0.5, 1.5)) for _ in range(n_leaves)]
    nodes, prev = list(leaves), list(leaves)
    forms = [
        lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
        lambda a, b: a / (b * b + 1.0), lambda a, b: (a * a + 1.0) ** 0.5,
        lambda a, b: -a, lambda a, b: (a - 1.0).relu() + b, lambda a, b: (a * 0.1).tanh(),
        lambda a, b: a.sigmoid(), lambda a, b: (a * 0.01).exp(),
        lambda a, b: (a * a + 1.0).log(), lambda a, b: (a * a + 0.5).sqrt(),
        lambda a, b: abs(a - b), lambda a, b: a.sin(), lambda a, b: b.cos(),
        lambda a, b: tapegrad.atan2(a, b * b + 1.0), lambda a, b: tapegrad.log1p(a * a),
        lambda a, b: tapegrad.expm1(a * 0.01), lambda a, b: a.leaky_relu(0.1),
        lambda a, b: tapegrad.maximum(a, b), lambda a, b: tapegrad.minimum(a, b),
        lambda a, b: 2.0 ** (a * 0.1), lambda a, b: 3.0 - a, lambda a, b: 2.0 / (a * a + 1.0),
    ]
    for _ in range(layers):
        layer = []
        for a in prev:
            b = nodes[rng.randrange(len(nodes))]
            out = forms[rng.randrange(len(forms))](a, b)
            layer.append((out * 0.5).tanh())           # keep values in range
        nodes.extend(layer)
        prev = layer
    return leaves, sum(prev, Value(0.0))


def test_every_op_in_a_layered_dag(counted):
    with Tape():
        leaves, root = _layered_dag(200, 12, seed=4)

        def grads():
            for v in leaves:
                v.grad = 0.0                         # backward accumulates, as micrograd's
            root.backward()
            return [v.grad for v in leaves]
        ref, out = both_ways(grads, counted)
    assert counted
    assert np.count_nonzero(ref) > 150
    assert_close(ref, out)


def test_rows_off_the_root_stay_out_of_the_sweep(counted):
    """A row that does not reach the root has an infinite partial (sqrt at 0): without
    the reach mask, 0 * inf would put nan into a shared leaf's gradient."""
    with Tape() as tape:
        xs = [Value(float(k % 7) + 1.0) for k in range(300)]
        s = Value(0.0)
        for k, x in enumerate(xs):
            s = s + x * float(k % 5)
        dead = (xs[0] - xs[0]).sqrt() * xs[1]         # d sqrt(0) = inf, not on the root
        keep = s * 2.0
        assert dead.data == 0.0 and len(tape) > 600

        def grads():
            f = Function(inputs=xs, outputs=keep)
            return f.value_and_grad(np.array([x.data for x in xs]))[1]
        ref, out = both_ways(grads, counted)
    assert counted
    assert np.isfinite(out).all()
    assert_close(ref, out)
    assert out[3] == pytest.approx(2.0 * 3)


def test_function_gradients_batched_and_single(counted):
    random.seed(1)
    model = MLP(3, [8, 8, 1])
    with Tape():
        xs = [Value(0.0) for _ in range(3)]
        out = model(xs)
        loss = (out - 0.25) ** 2 + 0.1 * xs[0].tanh()
    f = Function(inputs=xs, outputs=loss)
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(16, 3))

    def grads():
        single = f.value_and_grad(batch[0])[1]
        many = f.value_and_grad(batch)[1]
        return np.vstack([single, many])
    ref, got = both_ways(grads, counted)
    assert counted
    assert_close(ref, got)
    h = 1e-6                                          # and they are the gradient
    e = np.eye(3)[1] * h
    fd = (f(batch[2] + e) - f(batch[2] - e)) / (2 * h)
    assert got[3, 1] == pytest.approx(float(np.squeeze(fd)), rel=1e-6, abs=1e-9)


def test_replayed_training_steps_match(counted):
    def train():
        random.seed(0)
        model = MLP(2, [6, 6, 1])
        pts = [(math.sin(k), math.cos(3 * k)) for k in range(30)]
        with Tape() as tape:
            scores = [model([Value(a), Value(b)]) for a, b in pts]
            loss = sum(((1 + -(1.0 if a * b > 0 else -1.0) * s).relu() for (a, b), s
                        in zip(pts, scores)), Value(0.0)) * (1.0 / len(pts))
        losses = []
        for step in range(5):
            if step:
                tape.forward()
            model.zero_grad()
            loss.backward()
            for p in model.parameters():
                p.data -= 0.1 * p.grad
            losses.append(loss.data)
        return losses + [p.data for p in model.parameters()]
    ref, out = both_ways(train, counted)
    assert counted
    assert_close(ref, out)


def test_anomaly_mode_and_profiling_take_the_level_schedule(counted):
    """detect_anomaly and profile need the level schedule's per-group steps: they run
    it, and find what it finds on the NumPy kernels."""
    use_numba(counted)
    with Tape():
        x = Value(0.0)
        ys = [x * float(k) for k in range(200)]
        root = sum(ys, Value(0.0)) + x.sqrt()          # d sqrt(x) at 0: inf
        with tapegrad.detect_anomaly(), pytest.raises(FloatingPointError, match="sqrt"):
            root.backward()
    assert not counted
    with Tape():
        leaves, root = _layered_dag(100, 6, seed=2)
        with tapegrad.profile() as prof:
            root.backward()
        assert not counted and prof.backward_calls == 1
        grads = [v.grad for v in leaves]
        for v in leaves:
            v.grad = 0.0
        root.backward()
        assert counted
        assert_close(np.array(grads), np.array([v.grad for v in leaves]))


# -- the compiled loops against a plain loop ------------------------------------------------

def _plain_sweep(first, rows, x, y, p0, p1, adj, reach):
    """The accumulation the kernels compute, written as plainly as possible."""
    for k in range(x.size - 1, -1, -1):
        r = int(rows[k]) if rows.size else first + k
        if reach.size:
            if not reach[r]:
                continue
            reach[x[k]] = True
            if p1.size:
                reach[y[k]] = True
        adj[x[k]] += p0[k] * adj[r]
        if p1.size:
            adj[y[k]] += p1[k] * adj[r]


@pytest.mark.parametrize("listed", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("both", [False, True])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_compiled_loops_equal_a_plain_loop_bit_for_bit(listed, masked, both, dtype):
    """Chain links (x = r - 1, kept in a register by the range loop), a * a (x = y =
    r - 1), random operands, unreached rows, partials read through a gather (shared
    entries, as constants are): the same sums in the same order."""
    from tapegrad._numba_kernels import reverse_sweep
    rng = np.random.default_rng(7)
    first, m = 5, 400
    r = first + np.arange(m)
    kind = rng.integers(0, 4, m)
    x = np.where(kind == 0, rng.integers(0, r), r - 1)              # mostly links
    y = np.where(kind == 1, r - 1, rng.integers(0, r))              # some a * a
    y = np.where(kind == 2, x, y)
    rows = r.astype(dtype) if listed else np.zeros(0, dtype)
    gather = rng.integers(0, 300, (2 if both else 1) * m).astype(dtype)
    for samples in (1, 3):
        ext = rng.uniform(-1.5, 1.5, (300, samples))
        adj = np.zeros((first + m + 2, samples))
        adj[first + m - 1] = 1.0
        adj[first + m - 7] = 0.5                                     # a second seed
        reach = np.zeros(0, bool)
        if masked:
            reach = rng.random(first + m + 2) < 0.7
            reach[first + m - 1] = True
        ref_adj, ref_reach = adj.copy(), reach.copy()
        for s in range(samples):
            reach_s = reach.copy()
            p = ext[gather, s].reshape(-1, m)
            _plain_sweep(first, rows, x, y, p[0], p[1] if both else p[0, :0],
                         ref_adj[:, s], reach_s)
            ref_reach = reach_s
        reverse_sweep(first, rows, x.astype(dtype), y.astype(dtype), gather, ext, adj, reach)
        assert np.array_equal(adj, ref_adj)
        assert np.array_equal(reach, ref_reach)
