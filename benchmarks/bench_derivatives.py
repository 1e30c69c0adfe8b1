"""Dense Jacobian (100 outputs x 100 inputs) and Hessian (100 variables): tapegrad's
recorded Functions against CasADi (SX, compiled Function) and JAX (jit, CPU, float64),
in the same run. Prints a table with ratios ours / peer (below 1: we are faster).

    python benchmarks/bench_derivatives.py

A missing peer (``pip install casadi jax``) is skipped with a note.
"""

from __future__ import annotations

import importlib
import time

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
import numpy as np

from tapegrad import Function, Tape, Value

N = 100
RNG = np.random.default_rng(0)
W = RNG.normal(size=(N, N)) / N          # dense couplings, immediates on the tape
X0 = RNG.uniform(-1, 1, N)


def best(fn, repeat: int = 7, number: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return min(times)


# the two test problems, written once for every backend through ``ops``
def vector_fn(x, ops):
    """y_i = tanh(sum_j W_ij * sin(x_j)) + x_i * x_{i+1}: dense 100 x 100 Jacobian."""
    s = [ops.sin(v) for v in x]
    return [ops.tanh(ops.dot(W[i], s)) + x[i] * x[(i + 1) % N] for i in range(N)]


def scalar_fn(x, ops):
    """sum_i (1 - x_i)^2 + 100 (x_{i+1} - x_i^2)^2 + (sum_j W_0j x_j)^2: dense Hessian."""
    r = sum((1.0 - x[i]) ** 2 + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 for i in range(N - 1))
    return r + ops.dot(W[0], x) ** 2 + ops.exp(ops.dot(W[1], x))


class TapeOps:
    sin = staticmethod(lambda v: v.sin())
    tanh = staticmethod(lambda v: v.tanh())
    exp = staticmethod(lambda v: v.exp())

    @staticmethod
    def dot(w, s):
        acc = s[0] * float(w[0])
        for k in range(1, len(s)):
            acc = acc + s[k] * float(w[k])
        return acc


def ours():
    with Tape():
        xs = [Value(float(v)) for v in X0]
        ys = vector_fn(xs, TapeOps)
    f = Function(xs, ys)
    with Tape():
        xs2 = [Value(float(v)) for v in X0]
        s = scalar_fn(xs2, TapeOps)
    g = Function(xs2, s)
    g.hessian(X0)                                   # records the gradient program once
    return (lambda: f.jacobian(X0)), (lambda: g.hessian(X0)), f.jacobian(X0), g.hessian(X0)


def casadi_peer(ca):
    class Ops:
        sin = staticmethod(ca.sin)
        tanh = staticmethod(ca.tanh)
        exp = staticmethod(ca.exp)
        dot = staticmethod(lambda w, s: ca.dot(ca.DM(w), ca.vertcat(*s)))

    x = ca.SX.sym("x", N)
    xs = [x[i] for i in range(N)]
    jf = ca.Function("j", [x], [ca.jacobian(ca.vertcat(*vector_fn(xs, Ops)), x)])
    hess, _ = ca.hessian(scalar_fn(xs, Ops), x)
    hf = ca.Function("h", [x], [hess])
    return ((lambda: jf(X0)), (lambda: hf(X0)), np.array(jf(X0)), np.array(hf(X0)))


def jax_peer(jax):
    jax.config.update("jax_enable_x64", True)
    jnp = importlib.import_module("jax.numpy")
    w = jnp.asarray(W)

    def vec(x):
        return jnp.tanh(w @ jnp.sin(x)) + x * jnp.roll(x, -1)

    def sca(x):
        r = jnp.sum((1.0 - x[:-1]) ** 2 + 100.0 * (x[1:] - x[:-1] ** 2) ** 2)
        return r + (w[0] @ x) ** 2 + jnp.exp(w[1] @ x)

    jf = jax.jit(jax.jacfwd(vec))
    hf = jax.jit(jax.hessian(sca))
    x = jnp.asarray(X0)
    jf(x).block_until_ready()
    hf(x).block_until_ready()
    return ((lambda: jf(x).block_until_ready()), (lambda: hf(x).block_until_ready()),
            np.asarray(jf(x)), np.asarray(hf(x)))


def main() -> None:
    jac, hes, j_ref, h_ref = ours()
    rows = [("tapegrad", best(jac), best(hes))]
    for name, make in (("casadi", casadi_peer), ("jax", jax_peer)):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            print(f"note: {name} is not installed; skipped (pip install {name})")
            continue
        pj, ph, j, h = make(mod)
        assert np.allclose(j, j_ref, rtol=1e-9, atol=1e-12), f"{name} Jacobian differs"
        assert np.allclose(h, h_ref, rtol=1e-9, atol=1e-9), f"{name} Hessian differs"
        rows.append((name, best(pj), best(ph)))
    print(f"{'':10} {'jacobian 100x100':>18} {'ours/peer':>10} {'hessian 100':>14} "
          f"{'ours/peer':>10}")
    for name, tj, th in rows:
        print(f"{name:10} {tj * 1e3:15.3f} ms {rows[0][1] / tj:10.2f} {th * 1e3:11.3f} ms "
              f"{rows[0][2] / th:10.2f}")


if __name__ == "__main__":
    main()
