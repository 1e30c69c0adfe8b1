"""Jacobians, JVP/VJP, Hessians/HVPs of Functions and any-order tapegrad.grad, checked
against PyTorch float64 and finite differences on random graphs over every smooth op."""

from __future__ import annotations

import numpy as np
import pytest

import tapegrad
from tapegrad import Function, GuardError, Tape, Value
from tapegrad.ops import OPS

torch = pytest.importorskip("torch")          # imported once for the module
torch.set_default_dtype(torch.float64)

# every op with partials, how to apply it to (Value or tensor) operands, and a domain:
# operands are squashed into (-1, 1), then mapped where the op is smooth (off kinks)
SMOOTH = {
    "add": (lambda a, b, m: a + b), "sub": (lambda a, b, m: a - b),
    "mul": (lambda a, b, m: a * b),
    "div": (lambda a, b, m: a / (b * b + 0.5)),
    "pow": (lambda a, b, m: (a * a + 0.5) ** (b * 0.5 + 1.0)),
    "pow_imm": (lambda a, b, m: (a * a + 0.5) ** 2.5),
    "rpow": (lambda a, b, m: 1.7 ** a),
    "neg": (lambda a, b, m: -a),
    "relu": (lambda a, b, m: (a + 2.0).relu() if m is None else m.relu(a + 2.0)),
    "tanh": (lambda a, b, m: a.tanh()), "sigmoid": (lambda a, b, m: a.sigmoid()),
    "exp": (lambda a, b, m: a.exp()), "log": (lambda a, b, m: (a * a + 0.5).log()),
    "sqrt": (lambda a, b, m: (a * a + 0.5).sqrt()),
    "abs": (lambda a, b, m: abs(a - 3.0)), "sin": (lambda a, b, m: a.sin()),
    "cos": (lambda a, b, m: a.cos()),
    "atan2": (lambda a, b, m: tapegrad.atan2(a, b + 2.0) if m is None
              else torch.atan2(a, b + 2.0)),
    "log1p": (lambda a, b, m: (a * a).log1p()), "expm1": (lambda a, b, m: a.expm1()),
    "leaky_relu": (lambda a, b, m: tapegrad.leaky_relu(a - 3.0, b) if m is None
                   else torch.where(a - 3.0 > 0, a - 3.0, b * (a - 3.0))),
    "maximum": (lambda a, b, m: tapegrad.maximum(a, b + 3.0) if m is None
                else torch.maximum(a, b + 3.0)),
    "minimum": (lambda a, b, m: tapegrad.minimum(a - 3.0, b) if m is None
                else torch.minimum(a - 3.0, b)),
    "heaviside": (lambda a, b, m: a * tapegrad.heaviside(b + 3.0, 0.5) if m is None
                  else a * torch.heaviside((b + 3.0).detach(), torch.tensor(0.5))),
}


def test_every_differentiable_op_is_covered():
    # the built-in table (other tests add defop ops after it)
    builtin = OPS[: tapegrad.ops.HEAVISIDE.code + 1]
    names = {op.name for op in builtin if op.partials is not None}
    assert names <= {k.split("_imm")[0].replace("rpow", "pow") for k in SMOOTH}


def program(seed: int, n_in: int, n_out: int, steps: int = 14):
    """A random program: (apply on Values or tensors, ops used)."""
    rng = np.random.default_rng(seed)
    names = sorted(SMOOTH)
    plan = [(names[rng.integers(len(names))], int(rng.integers(1 << 30)),
             int(rng.integers(1 << 30))) for _ in range(steps)]

    def run(xs, m=None):
        nodes = list(xs)
        for name, i, j in plan:
            a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
            v = SMOOTH[name](a, b, m)
            nodes.append(v / (v * v + 1.0))               # keep nodes in (-1, 1)
        return [nodes[-1 - k] * (1.0 + k) + nodes[k % n_in] for k in range(n_out)]
    return run, {p[0] for p in plan}


def record(run, x0, n_out):
    with Tape():
        xs = [Value(float(v)) for v in x0]
        outs = run(xs)
    return xs, outs


def torch_fn(run):
    def f(t):
        return torch.stack(run(list(t), torch))
    return f


SEEDS = range(10)


def test_programs_use_every_smooth_op():
    used = set().union(*(program(s, 3, 2, 14)[1] for s in range(60)))
    assert used == set(SMOOTH)


@pytest.mark.parametrize("seed", range(60))
def test_jacobian_matches_torch(seed):
    n_in, n_out = 2 + seed % 3, 1 + seed % 4
    run, _ = program(seed, n_in, n_out)
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-0.9, 0.9, n_in)
    xs, outs = record(run, x0, n_out)
    f = Function(xs, outs)
    want = torch.autograd.functional.jacobian(torch_fn(run), torch.tensor(x0)).numpy()
    np.testing.assert_allclose(f.jacobian(x0), want, rtol=1e-10, atol=1e-12)
    batch = np.stack([x0, rng.uniform(-0.9, 0.9, n_in)])
    jb = f.jacobian(batch)
    assert jb.shape == (2, n_out, n_in)
    want1 = torch.autograd.functional.jacobian(torch_fn(run), torch.tensor(batch[1])).numpy()
    np.testing.assert_allclose(jb[1], want1, rtol=1e-10, atol=1e-12)
    v = rng.normal(size=n_in)
    u = rng.normal(size=n_out)
    _, jv = torch.autograd.functional.jvp(torch_fn(run), torch.tensor(x0), torch.tensor(v))
    _, uj = torch.autograd.functional.vjp(torch_fn(run), torch.tensor(x0), torch.tensor(u))
    np.testing.assert_allclose(f.jvp(x0, v), jv.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f.vjp(x0, u), uj.numpy(), rtol=1e-10, atol=1e-12)
    vb = np.stack([v, v])
    np.testing.assert_allclose(f.jvp(batch, vb), np.einsum("boi,bi->bo", jb, vb),
                               rtol=1e-10, atol=1e-12)
    ub = np.stack([u, -u])
    np.testing.assert_allclose(f.vjp(batch, ub), np.einsum("boi,bo->bi", jb, ub),
                               rtol=1e-10, atol=1e-12)
    pattern = f.jacobian_sparsity()
    assert not (np.abs(jb).max(axis=0)[~pattern] > 0).any()


@pytest.mark.parametrize("seed", range(40))
def test_hessian_matches_torch(seed):
    n_in = 2 + seed % 3
    run, _ = program(seed + 1000, n_in, 1)
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-0.9, 0.9, n_in)
    xs, outs = record(run, x0, 1)
    f = Function(xs, outs[0])

    def scalar(t):
        return torch_fn(run)(t)[0]
    want = torch.autograd.functional.hessian(scalar, torch.tensor(x0)).numpy()
    np.testing.assert_allclose(f.hessian(x0), want, rtol=1e-9, atol=1e-11)
    x1 = rng.uniform(-0.9, 0.9, n_in)
    hb = f.hessian(np.stack([x0, x1]))
    want1 = torch.autograd.functional.hessian(scalar, torch.tensor(x1)).numpy()
    np.testing.assert_allclose(hb[1], want1, rtol=1e-9, atol=1e-11)
    v = rng.normal(size=n_in)
    _, hv = torch.autograd.functional.hvp(scalar, torch.tensor(x0), torch.tensor(v))
    np.testing.assert_allclose(f.hvp(x0, v), hv.numpy(), rtol=1e-9, atol=1e-11)
    pattern = f.hessian_sparsity()
    assert (pattern == pattern.T).all()
    assert not (np.abs(hb).max(axis=0)[~pattern] > 0).any()
    np.testing.assert_allclose(f.hessian(x0, sparse=True).toarray(), f.hessian(x0),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(25))
def test_grad_second_and_third_order_match_torch(seed):
    run, _ = program(seed + 2000, 2, 1, steps=8)
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-0.9, 0.9, 2)
    xs, (y,) = record(run, x0, 1)
    g = tapegrad.grad(y, xs)
    h = [tapegrad.grad(gk, xs) for gk in g]
    t3 = tapegrad.grad(h[0][1], xs)                  # d3 y / dx0 dx1 dx{0,1}
    tx = [torch.tensor(v, requires_grad=True) for v in x0]
    ty = run(tx, torch)[0]

    def tgrad(out, create=True):
        if out is None or not out.requires_grad:
            return (None, None)
        return torch.autograd.grad(out, tx, create_graph=create, allow_unused=True)
    tg = tgrad(ty)
    th = [tgrad(gk) for gk in tg]
    tt = tgrad(th[0][1], create=False)

    def num(t):
        return 0.0 if t is None else float(t.detach())
    np.testing.assert_allclose([v.data for v in g], [num(t) for t in tg], rtol=1e-10)
    np.testing.assert_allclose([[v.data for v in r] for r in h],
                               [[num(t) for t in r] for r in th], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([v.data for v in t3], [num(t) for t in tt],
                               rtol=1e-8, atol=1e-10)


def test_grad_finite_differences_and_mixed_partials():
    x, y = Value(0.7), Value(-0.4)
    f = (x * y).sin() * x.exp() + y ** 3
    gx, gy = tapegrad.grad(f, [x, y])
    (gxy,) = tapegrad.grad(gx, [y])
    (gyx,) = tapegrad.grad(gy, [x])
    assert gxy.data == pytest.approx(gyx.data, rel=1e-12)
    h = 1e-5

    def fx(a, b):
        return np.sin(a * b) * np.exp(a) + b ** 3

    def dfx(a, b):
        return (fx(a + h, b) - fx(a - h, b)) / (2 * h)
    assert gx.data == pytest.approx(dfx(0.7, -0.4), rel=1e-8)
    assert gxy.data == pytest.approx((dfx(0.7, -0.4 + h) - dfx(0.7, -0.4 - h)) / (2 * h),
                                     rel=1e-5)


def test_grad_results_are_recorded_on_the_tape_and_replay():
    with Tape() as t:
        x = Value(2.0)
        y = x.tanh() * x
    before = len(t)
    (g,) = tapegrad.grad(y, [x])
    assert g.tape is t and len(t) > before
    x.data = -1.0
    t.forward()
    want = (1 - np.tanh(-1.0) ** 2) * -1.0 + np.tanh(-1.0)
    assert g.data == pytest.approx(want, rel=1e-12)


def test_grad_relu_derivative_replays_across_the_kink_without_guard_error():
    with Tape() as t:
        x = Value(1.5)
        y = x.relu() * x
    (g,) = tapegrad.grad(y, [x])
    assert g.data == pytest.approx(3.0)
    x.data = -2.0
    t.forward()                                    # heaviside is data, not a guard
    assert g.data == 0.0


def test_grad_of_an_unrelated_value_is_a_zero_leaf():
    x, z = Value(1.0), Value(5.0)
    y = x * 2.0
    gx, gz = tapegrad.grad(y, [x, z])
    assert gx.data == 2.0 and gz.data == 0.0 and gz.is_leaf()


def test_grad_type_errors():
    x = Value(1.0)
    with pytest.raises(TypeError, match="y must be a Value"):
        tapegrad.grad(1.0, [x])
    with pytest.raises(TypeError, match="list or tuple"):
        tapegrad.grad(x * 2, x)
    with pytest.raises(TypeError, match=r"xs\[1\] must be a Value"):
        tapegrad.grad(x * 2, [x, 3.0])


def test_grad_refuses_custom_rows_and_defops_without_a_rule():
    a = Value(2.0)
    c = Value(a.data ** 2, (a,), "sq")
    with pytest.raises(NotImplementedError, match=r"row \d+ .*Value\(data, _children, _op\)"):
        tapegrad.grad(c * 3.0, [a])
    name = "cube_no_rule_test"
    cube = tapegrad.defop(name, lambda x, y: x ** 3, lambda x, y, out: (3 * x * x, 0.0),
                          reads="x")
    b = Value(2.0)
    with pytest.raises(NotImplementedError, match=f"op '{name}' at row"):
        tapegrad.grad(cube(b), [b])


def test_defop_with_grad_rule_is_differentiated_twice():
    square = tapegrad.defop("square_rule_test", lambda x, y: x * x,
                            lambda x, y, out: (2 * x, 0.0), reads="x",
                            grad_rule=lambda x, y, out: (2.0 * x, 0.0), curvature="xx")
    x = Value(3.0)
    (g,) = tapegrad.grad(square(x).sin(), [x])
    (h,) = tapegrad.grad(g, [x])
    assert g.data == pytest.approx(np.cos(9.0) * 6.0)
    assert h.data == pytest.approx(-np.sin(9.0) * 36.0 + np.cos(9.0) * 2.0)


def rosenbrock(n: int):
    with Tape():
        xs = [Value(0.1 * i) for i in range(n)]
        f = sum(((1.0 - xs[i]) ** 2 + 100.0 * (xs[i + 1] - xs[i] ** 2) ** 2
                 for i in range(n - 1)), Value(0.0))
    return Function(xs, f)


def test_chained_rosenbrock_hessian_is_tridiagonal_and_sparse_path_uses_three_colours():
    n = 30
    f = rosenbrock(n)
    k = np.arange(n)
    want = np.abs(k[:, None] - k[None, :]) <= 1
    np.testing.assert_array_equal(f.hessian_sparsity(), want)
    x = np.linspace(-1.2, 1.0, n)
    h = f.hessian(x, sparse=True)
    assert f._last_colours == 3
    np.testing.assert_allclose(h.toarray(), f.hessian(x), rtol=1e-13, atol=1e-12)
    assert h.nnz == want.sum()


def test_sparse_jacobian_banded_and_colour_count():
    n = 40
    with Tape():
        xs = [Value(0.0) for _ in range(n)]
        outs = [xs[i - 1].sin() * xs[i] + xs[(i + 1) % n] if i else xs[0] * 2.0
                for i in range(n)]
    f = Function(xs, outs)
    pattern = f.jacobian_sparsity()
    assert pattern.sum() <= 3 * n
    x = np.random.default_rng(1).normal(size=n)
    j = f.jacobian(x, sparse=True)
    np.testing.assert_allclose(j.toarray(), f.jacobian(x), rtol=1e-13)
    assert f._last_colours <= 4


def test_sparse_without_scipy_returns_coordinates(monkeypatch):
    import sys
    f = rosenbrock(5)
    monkeypatch.setitem(sys.modules, "scipy", None)
    rows, cols, vals = f.hessian(np.ones(5), sparse=True)
    dense = np.zeros((5, 5))
    dense[rows, cols] = vals
    np.testing.assert_allclose(dense, f.hessian(np.ones(5)))


def test_hessian_does_not_grow_the_users_tape():
    with Tape() as t:
        x, y = Value(1.0), Value(2.0)
        z = x * y * x
    n = len(t)
    f = Function([x, y], z)
    f.hessian([1.0, 2.0])
    assert len(t) == n
    np.testing.assert_allclose(f.hessian([1.0, 2.0]), [[4.0, 2.0], [2.0, 0.0]])


def test_hessian_reads_current_parameters():
    with Tape():
        x, w = Value(1.0), Value(3.0)
        z = w * x * x
    f = Function([x], z)
    assert f.hessian([1.0])[0, 0] == pytest.approx(6.0)
    w.data = 5.0
    assert f.hessian([1.0])[0, 0] == pytest.approx(10.0)


def small_function():
    with Tape():
        a, b = Value(1.0), Value(2.0)
        outs = [a * b, a + b, a.exp()]
    return Function([a, b], outs), Function([a, b], outs[0])


@pytest.mark.parametrize("call, match", [
    (lambda f, g: f.jacobian(np.ones(3)), r"\(2,\) or \(B, 2\).*\(3,\)"),
    (lambda f, g: f.jvp(np.ones(2), np.ones(3)), r"v \(tangents\) must have shape \(2,\).*\(3,\)"),
    (lambda f, g: f.jvp(np.ones((4, 2)), np.ones(2)), r"shape \(4, 2\).*got \(2,\)"),
    (lambda f, g: f.vjp(np.ones(2), np.ones(2)), r"u \(cotangents\) must have shape \(3,\)"),
    (lambda f, g: f.hessian(np.ones(2)), "hessian needs a Function with one output"),
    (lambda f, g: g.hvp(np.ones(2), np.ones(5)), r"v must have shape \(2,\).*\(5,\)"),
    (lambda f, g: g.hessian(np.ones((3, 2)), sparse=True), "one sample"),
    (lambda f, g: f.jacobian(np.ones((3, 2)), sparse=True), "one sample"),
])
def test_shape_errors(call, match):
    f, g = small_function()
    with pytest.raises(ValueError, match=match):
        call(f, g)


def test_guards_are_checked():
    with Tape():
        x = Value(1.0)
        y = x * x if x > 0 else -x
    f = Function([x], y)
    assert f.jacobian([2.0])[0, 0] == pytest.approx(4.0)
    for call in (lambda: f.jacobian([-1.0]), lambda: f.jvp([-1.0], [1.0]),
                 lambda: f.vjp([-1.0], [1.0]), lambda: f.hessian([-1.0]),
                 lambda: f.hvp([-1.0], [1.0]), lambda: f.jacobian([[1.0], [-1.0]])):
        with pytest.raises(GuardError):
            call()


def test_anomaly_mode_raises_for_infinite_derivatives():
    with Tape():
        x = Value(1.0)
        y = x.sqrt()
    f = Function([x], y)
    assert np.isinf(f.jacobian([0.0])[0, 0])
    with tapegrad.detect_anomaly(), pytest.raises(FloatingPointError, match="sqrt"):
        f.jacobian([0.0])


def test_mode_choice_agrees_wide_and_tall():
    rng = np.random.default_rng(3)
    with Tape():
        xs = [Value(0.0) for _ in range(6)]
        wide = [sum((x * float(c) for x, c in zip(xs, rng.normal(size=6))), Value(0.0)).tanh()
                for _ in range(2)]
    f = Function(xs, wide)                          # n_in > n_out: reverse mode
    x = rng.normal(size=6)
    j = f.jacobian(x)
    fd = np.stack([(f(x + 1e-6 * e) - f(x - 1e-6 * e)) / 2e-6 for e in np.eye(6)], axis=1)
    np.testing.assert_allclose(j, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(f.directional(x[None], np.eye(6)[None])[0], j, rtol=1e-13)


# -- the condensed sweep (single-reader rows eliminated) against the level-by-level one --

def chained_program(seed: int, n_in: int = 6):
    """Long sum chains (dots), recurrences, expression trees, rows read twice, a
    parameter leaf that is not an input, an unused input, an output that is an input,
    a repeated output and one that depends on no input."""
    rng = np.random.default_rng(seed)
    with Tape():
        xs = [Value(float(v)) for v in rng.uniform(-1, 1, n_in)]
        p = Value(0.3)                                      # a leaf, not an input
        s = [x.sin() for x in xs[:-1]]                      # xs[-1] is unused
        outs = []
        for _ in range(3):
            acc = s[0] * float(rng.normal())
            for _ in range(int(rng.integers(20, 60))):
                term = s[int(rng.integers(len(s)))] * float(rng.normal())
                pick = rng.integers(4)                  # + - and neg links: gains +-1
                acc = acc - term if pick == 0 else -(acc + term) if pick == 1 else acc + term
            outs.append(acc.tanh() + xs[0] * xs[1])
        h = xs[2]
        for _ in range(int(rng.integers(30, 80))):         # a recurrence
            h = (h * float(rng.normal()) + p + s[1]).tanh()
        outs += [h, h * h, outs[0] * outs[1], xs[3], outs[2], p * 2.0 + 1.0,
                 (xs[4] * tapegrad.heaviside(xs[0], 0.5)).exp()]
    return xs, outs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batch", [None, 3])
def test_condensed_sweeps_agree_with_level_sweeps(seed, batch):
    xs, outs = chained_program(seed)
    f = Function(xs, outs)
    rng = np.random.default_rng(seed + 100)
    x = rng.uniform(-1, 1, len(xs) if batch is None else (batch, len(xs)))
    sw = f._sweeps()
    values = f._values(np.atleast_2d(x))
    f._run(values)
    part = sw.partials(values)
    cd = sw.condensed
    assert cd.count < f._plan.size / 4                  # the chains are gone
    for reverse, (src, dst) in ((False, (sw.sources, sw.targets)),
                                (True, (sw.targets, sw.sources))):
        k = 5
        seed_shape = (src.size,) + values.shape[1:] + (k,)
        seeds = rng.normal(size=seed_shape)
        arr = np.zeros(values.shape + (k,))
        if reverse:
            np.add.at(arr, src, seeds)
            sw.reverse(part, arr)
        else:
            arr[src] = seeds
            sw.forward(part, arr)
        general = arr[dst]
        fast = (cd.reverse if reverse else cd.forward)(part, seeds)
        np.testing.assert_allclose(fast, general, rtol=1e-12, atol=1e-14)


def test_condensed_jacobian_matches_anomaly_mode_path_and_finite_differences():
    xs, outs = chained_program(7)
    f = Function(xs, outs)
    x = np.random.default_rng(1).uniform(-1, 1, len(xs))
    fast = f.jacobian(x)
    with tapegrad.detect_anomaly():                     # the level-by-level sweep
        slow = f.jacobian(x)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-14)
    rev = f.directional(x[None], np.eye(len(outs))[None], reverse=True)[0].T
    np.testing.assert_allclose(rev, slow, rtol=1e-12, atol=1e-14)
    eps = 1e-6
    fd = np.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps)
                   for e in np.eye(len(xs))], axis=1)
    np.testing.assert_allclose(fast, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fill", [0.0, 2.0])
def test_condensed_dense_and_edgewise_steps_agree(fill, monkeypatch):
    import tapegrad._plan as plan_module
    xs, outs = chained_program(3)
    x = np.random.default_rng(2).uniform(-1, 1, (2, len(xs)))
    ref = Function(xs, outs).jacobian(x)
    monkeypatch.setattr(plan_module, "_DENSE_FILL", fill)   # 0: all dense, 2: none
    f = Function(xs, outs)
    assert all(s.dense == (fill == 0.0) for s in f._sweeps().condensed.steps)
    np.testing.assert_allclose(f.jacobian(x), ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(f.directional(x, np.ones((2, len(outs), 1)), True)[..., 0],
                               np.ones(len(outs)) @ ref, rtol=1e-12, atol=1e-14)
