"""Past one process and one array library: pickled Functions, Dask arrays on a real
cluster, and PyTorch / array_api_strict arrays (issue #16)."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import tapegrad
from tapegrad import Function, GuardError, Tape, Value, _plan
from tapegrad.nn import MLP
from tapegrad.ops import array_rule

ROOT = Path(__file__).resolve().parents[1]


def mlp_function(seed: int = 0, junk: int = 0) -> Function:
    random.seed(seed)
    with Tape():
        for _ in range(junk):                       # unrelated rows on the same tape
            Value(1.0) * 2.0 + 1.0
        model = MLP(2, [16, 16, 1])
        x = [Value(0.0), Value(0.0)]
        score = model(x)
    f = Function(x, score)
    f.model = model
    return f


@pytest.fixture(scope="module")
def f():
    return mlp_function(junk=500)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).uniform(-1.5, 1.5, (2000, 2))


# -- pickling ------------------------------------------------------------------------------

def test_pickled_function_is_bit_identical_and_holds_only_its_rows(f, X):
    g = pickle.loads(pickle.dumps(f))
    assert len(g.tape) == f.rows.size < len(f.tape)
    assert np.array_equal(g(X), f(X))
    assert np.array_equal(g(X[0]), f(X[0]))
    for a, b in zip(g.value_and_grad(X), f.value_and_grad(X)):
        assert np.array_equal(a, b)
    assert g.value_and_grad(X[3])[0] == f.value_and_grad(X[3])[0]


def test_pickling_freezes_the_parameters_at_their_current_values():
    f = mlp_function(1)
    x = np.array([[0.3, -0.4]])
    g = pickle.loads(pickle.dumps(f))
    before = f(x)
    p = f.model.parameters()[-1]                     # the output bias
    p.data += 1.0
    assert not np.array_equal(f(x), before)          # in process: reads .data per call
    assert np.array_equal(g(x), before)              # the copy: frozen at pickling
    p.data -= 1.0


def test_pickled_function_keeps_its_guards():
    with Tape():
        a, b = Value(0.0), Value(1.0)
        y = a * b if a < b else a + b
    g = pickle.loads(pickle.dumps(Function([a, b], y)))
    assert np.array_equal(g([[1.0, 2.0]]), [[2.0]])
    with pytest.raises(GuardError, match="replay diverged"):
        g([[3.0, 2.0]])


def test_custom_rows_refuse_to_pickle_by_name():
    with Tape("lecture"):
        a = Value(2.0)
        c = Value(a.data * 3.0, (a,), "triple")
        y = c + 1.0
    f = Function([a], y)
    with pytest.raises(TypeError, match=r"row 1 is a custom row .*'triple'.* cannot be copied"):
        pickle.dumps(f)


def test_subtape_copies_a_closed_set_and_refuses_others():
    with Tape("big") as t:
        a, b = Value(2.0, label="a"), Value(3.0)
        Value(9.0) * 2.0                                    # rows 2, 3: unrelated
        y = a * b
    sub = t.subtape([0, 1, 4])
    assert len(sub) == 3 and sub.value(2).data == 6.0 and sub.label(0) == "a"
    assert sub.args.tolist()[2] == [0, 1]
    with pytest.raises(ValueError, match="not closed under operands: row 4"):
        t.subtape([1, 4])
    with pytest.raises(ValueError, match="ascending"):
        t.subtape([4, 1, 0])
    with pytest.raises(TypeError, match="1-D int array"):
        t.subtape([0.5])
    assert y.data == 6.0


def test_import_tapegrad_imports_neither_dask_nor_array_api_compat():
    code = ("import sys, tapegrad; bad = [m for m in ('dask', 'distributed', "
            "'array_api_compat', 'torch') if m in sys.modules]; print(bad)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "[]"


# -- Dask ----------------------------------------------------------------------------------

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    old = os.environ.get("PYTHONPATH")
    # the worker processes must import this checkout's tapegrad, as this process does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old]))
    try:
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"),
                   **tapegrad.DASK_WORKER_ENV}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                               processes=True, dashboard_address=None,
                                               silence_logs=40)
        c = distributed.Client(cluster)
        yield c
        c.close()
        cluster.close()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def test_dask_on_a_process_cluster_equals_the_in_memory_evaluation(f, X, client):
    D = da.from_array(X, chunks=(500, 2))
    y = f(D)
    v, g = f.value_and_grad(D)
    assert isinstance(y, da.Array) and y.shape == (2000, 1) and y.chunks[0] == D.chunks[0]
    with distributed.get_task_stream(client) as ts:
        y_, v_, g_ = dask.compute(y, v, g)
    workers = {t["worker"] for t in ts.data if "tapegrad-call" in str(t["key"])}
    # ran in the worker processes (which of the two takes which block is the scheduler's
    # choice: under load one worker may take them all)
    assert workers and workers <= set(client.scheduler_info()["workers"])
    assert np.array_equal(y_, f(X))
    V, G = f.value_and_grad(X)
    assert np.array_equal(v_, V) and np.array_equal(g_, G)


def test_dask_calls_are_lazy_and_value_and_grad_evaluates_each_block_once(f, X, monkeypatch):
    runs = []
    real = _plan.Plan.run
    monkeypatch.setattr(_plan.Plan, "run", lambda self, *a, **k: (runs.append(1),
                                                                   real(self, *a, **k))[1])
    D = da.from_array(X, chunks=(500, 2))
    v, g = f.value_and_grad(D)
    y = f(D)
    assert runs == []                                       # nothing evaluated yet
    dask.compute(v, g, scheduler="sync")
    assert len(runs) == 4                                   # 4 blocks, each once
    assert np.array_equal(y.compute(scheduler="sync"), f(X))


def test_dask_chunks_along_the_inputs_are_rechunked_with_a_warning(f, X):
    D = da.from_array(X, chunks=(700, 1))
    with pytest.warns(UserWarning, match="rechunking it to one chunk on axis 1"):
        y = f(D)
    assert np.array_equal(y.compute(scheduler="sync"), f(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(da.from_array(X, chunks=(700, 2)))               # no warning when chunked right


def test_dask_arrays_of_the_wrong_shape_are_refused(f):
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        f(da.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        f.value_and_grad(da.zeros(2))


# -- array API -----------------------------------------------------------------------------

torch = pytest.importorskip("torch")
strict = pytest.importorskip("array_api_strict")


def _np(a) -> np.ndarray:
    return np.from_dlpack(a)


@pytest.mark.parametrize("lib", ["torch", "strict"])
def test_array_api_results_equal_numpy(f, X, lib):
    asarray = torch.asarray if lib == "torch" else strict.asarray
    T = asarray(X[:300])
    y = f(T)
    assert type(y) is type(T) and tuple(y.shape) == (300, 1)
    np.testing.assert_allclose(_np(y), f(X[:300]), rtol=1e-12, atol=1e-12)
    v, g = f.value_and_grad(T)
    V, G = f.value_and_grad(X[:300])
    assert type(v) is type(T) and tuple(g.shape) == (300, 2)
    np.testing.assert_allclose(_np(v), V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(g), G, rtol=1e-12, atol=1e-12)
    v1, g1 = f.value_and_grad(asarray(X[5]))
    assert float(v1) == pytest.approx(V[5], abs=1e-12) and tuple(g1.shape) == (2,)
    assert tuple(f(asarray(X[5])).shape) == (1,)


def test_torch_covers_every_op_chains_and_guards():
    with Tape():
        a, b = Value(0.5), Value(1.5)
        terms = [a.tanh(), a.sigmoid(), (a * b).exp(), b.log(), b.sqrt(), abs(a - b),
                 a.sin(), b.cos(), a ** 2, 2 ** a, b ** a, a / b, -a, a.relu(),
                 tapegrad.atan2(a, b), tapegrad.log1p(b), tapegrad.expm1(a),
                 tapegrad.leaky_relu(a - 1.0), tapegrad.maximum(a, b), tapegrad.minimum(a, b)]
        s = terms[0]
        for t in terms[1:]:
            s = s + t                                        # a folded sum chain
        p = a
        for _ in range(10):
            p = p * b                                        # a folded product chain
        y = s + p if a < b else s
    f = Function([a, b], y)
    X = np.random.default_rng(1).uniform(0.1, 1.0, (64, 2))
    X[:, 1] += 1.0
    T = torch.asarray(X)
    np.testing.assert_allclose(f(T).numpy(), f(X), rtol=1e-12, atol=1e-12)
    for ours, ref in zip(f.value_and_grad(T), f.value_and_grad(X)):
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(GuardError, match="for sample 0"):
        f(torch.asarray([[2.0, 1.5]], dtype=torch.float64))
    np.testing.assert_allclose(f(T.to(torch.float32)).numpy(), f(X.astype(np.float32)),
                               rtol=1e-12, atol=1e-12)      # float32 in: upcast to float64


def test_defop_rules_numpy_only_or_for_any_namespace():
    plain = tapegrad.defop("scale_test_softplus", lambda x, y: np.logaddexp(0.0, x),
                           lambda x, y, out: (1.0 / (1.0 + np.exp(-x)), 0.0), reads="x")
    anyxp = tapegrad.defop("scale_test_cube", array_rule(lambda xp, x, y: x * x * x),
                           array_rule(lambda xp, x, y, out: (3.0 * x * x, 0.0)), reads="x")
    with Tape():
        a = Value(0.5)
        y1, y2 = plain(a), anyxp(a)
    f1, f2 = Function([a], y1), Function([a], y2)
    X = np.array([[0.1], [0.7]])
    assert np.allclose(f1(X), np.logaddexp(0.0, X))       # NumPy: as before
    with pytest.raises(TypeError, match="'scale_test_softplus' has NumPy-only rules"):
        f1(torch.asarray(X))
    v, g = f2.value_and_grad(torch.asarray(X))
    np.testing.assert_allclose(g.numpy(), 3 * X * X, rtol=1e-12)


def test_array_api_bad_inputs():
    f = mlp_function()
    with pytest.raises(ValueError, match=r"expected shape \(2,\) or \(B, 2\)"):
        f(torch.zeros((3, 3), dtype=torch.float64))
    with pytest.raises(ValueError, match="real numbers"):
        f(torch.zeros((3, 2), dtype=torch.complex128))
