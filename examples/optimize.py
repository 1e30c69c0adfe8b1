"""tapegrad's ``Function`` as the objective and gradient of ``scipy.optimize.minimize``.

    python examples/optimize.py                      # both problems at their default sizes
    python examples/optimize.py rosen --n 200        # only Rosenbrock, 200 variables
    python examples/optimize.py net --grid 16        # only the net, 16 x 16 masses

Each objective is recorded once, in ``with Tape():`` on leaf Values, and wrapped as
``fn = Function(xs, y)``; ``fn.value_and_grad(x)`` then replays the tape for a NumPy
vector ``x`` and returns the value and the gradient, which is what
``minimize(..., jac=True)`` wants. No Python-level graph is rebuilt per iteration.

1. **Rosenbrock** in ``--n`` variables (default 2,000), from the start point of SciPy's
   tutorial, ``(1.3, 0.7, 0.8, 1.9, 1.2)`` repeated (about 50 iterations), or with
   ``--start classic`` from ``(-1.2, 1, -1.2, 1, ...)`` (about 10^4 iterations at
   n = 2,000: the valley is followed one coordinate at a time). The gradient is checked
   against ``scipy.optimize.rosen_der`` at the start point, and the minimum is ``x = 1``.
2. **A hanging net**: ``--grid`` x ``--grid`` point masses (default 32 x 32, so 3,072
   coordinates) joined to their four neighbours by springs whose rest length is half the
   grid spacing; the outer ring of the square is fixed and gravity pulls the masses
   down. The equilibrium minimises the potential energy (springs plus gravity). The
   solution is checked with Newton's laws: the springs' pull on the fixed ring carries
   the net's whole weight. The energy is also recomputed with plain NumPy.

Needs SciPy: ``pip install "tapegrad[examples]"`` (or ``pip install scipy``). Exit status
1 when a check fails or the optimizer does not converge.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tapegrad import Function, Tape, Value

INSTALL_HINT = 'pip install "tapegrad[examples]"'


def _scipy():
    try:
        import scipy.optimize
    except ImportError:
        sys.exit(f"examples/optimize.py needs SciPy: {INSTALL_HINT}")
    return scipy.optimize


# -- Rosenbrock --------------------------------------------------------------------------

def rosenbrock(xs: list[Value]) -> Value:
    """``sum(100 (x[i+1] - x[i]**2)**2 + (1 - x[i])**2)``, scipy's ``rosen``."""
    total = Value(0.0)
    for a, b in zip(xs, xs[1:]):
        total = total + 100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2
    return total


STARTS = {"tutorial": [1.3, 0.7, 0.8, 1.9, 1.2], "classic": [-1.2, 1.0]}


def run_rosen(n: int, maxiter: int, start_point: str = "tutorial") -> bool:
    opt = _scipy()
    start = time.perf_counter()
    with Tape("rosenbrock"):
        xs = [Value(0.0) for _ in range(n)]
        y = rosenbrock(xs)
    fn = Function(xs, y)
    recorded = time.perf_counter() - start

    x0 = np.resize(np.array(STARTS[start_point]), n)
    f0, g0 = fn.value_and_grad(x0)
    value_ok = np.isclose(f0, opt.rosen(x0), rtol=1e-12)
    grad_err = float(np.max(np.abs(g0 - opt.rosen_der(x0))) / np.max(np.abs(g0)))
    print(f"Rosenbrock, n = {n:,}, {start_point} start: recorded once in "
          f"{recorded * 1e3:.1f} ms")
    print(f"  at x0: f = {f0:.6g} (scipy.optimize.rosen agrees: {bool(value_ok)}), "
          f"max |grad - rosen_der| / max |grad| = {grad_err:.1e}")

    start = time.perf_counter()
    res = opt.minimize(fn.value_and_grad, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": maxiter, "maxfun": 2 * maxiter,
                                "ftol": 1e-14, "gtol": 1e-8})
    seconds = time.perf_counter() - start
    dist = float(np.max(np.abs(res.x - 1.0)))
    print(f"  L-BFGS-B: {res.message} after {res.nit} iterations, {res.nfev} evaluations, "
          f"{seconds:.2f} s ({seconds / max(res.nfev, 1) * 1e3:.2f} ms per value_and_grad)")
    print(f"  final f = {res.fun:.3e}, max |x - 1| = {dist:.2e}")
    ok = bool(value_ok) and grad_err < 1e-12 and res.fun < 1e-8 and dist < 1e-3
    print(f"  {'ok' if ok else 'FAILED'}: gradient matches rosen_der, minimum at x = 1")
    return ok


# -- a hanging net of springs ------------------------------------------------------------

class Net:
    """``m`` x ``m`` free masses inside a fixed square ring, springs along grid edges."""

    def __init__(self, m: int, stiffness: float = 1.0, rest: float = 0.5,
                 gravity: float = 1.0) -> None:
        self.m = m
        self.h = 1.0 / (m + 1)                  # grid spacing; the square is [0, 1]^2
        self.rest = rest * self.h               # rest length < spacing: springs in tension
        self.k = stiffness
        self.weight = gravity / m**2            # m * g per mass: the net weighs `gravity`
        n = m + 2
        index = -np.ones((n, n), np.int64)      # grid point -> free mass, -1 when fixed
        index[1:-1, 1:-1] = np.arange(m * m).reshape(m, m)
        self.index = index
        gi, gj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        self.fixed = np.stack([gi * self.h, gj * self.h, np.zeros_like(gi, float)], axis=-1)
        edges = []
        for a, b in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                     ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
            ia, ib = index[a].ravel(), index[b].ravel()
            pa = np.stack([gi[a].ravel(), gj[a].ravel()], 1)
            pb = np.stack([gi[b].ravel(), gj[b].ravel()], 1)
            keep = (ia >= 0) | (ib >= 0)            # springs between two fixed points: none
            edges += list(zip(ia[keep], ib[keep], map(tuple, pa[keep]), map(tuple, pb[keep])))
        self.edges = edges

    @property
    def n_params(self) -> int:
        return 3 * self.m * self.m

    def start(self) -> np.ndarray:
        """The flat net: every mass at its grid point."""
        return self.fixed[1:-1, 1:-1].reshape(-1)

    def _point(self, coords, q: int, grid: tuple[int, int]):
        return coords[3 * q: 3 * q + 3] if q >= 0 else list(self.fixed[grid])

    def energy(self, coords) -> Value:
        """Spring energy ``k/2 (|d| - rest)^2`` of every edge plus ``m g z`` of every mass."""
        total = Value(0.0)
        for qa, qb, ga, gb in self.edges:
            pa, pb = self._point(coords, qa, ga), self._point(coords, qb, gb)
            dx, dy, dz = (pb[c] - pa[c] for c in range(3))
            stretch = (dx * dx + dy * dy + dz * dz).sqrt() - self.rest
            total = total + (0.5 * self.k) * stretch * stretch
        for q in range(self.m * self.m):
            total = total + self.weight * coords[3 * q + 2]
        return total

    def _ends(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        xyz = x.reshape(-1, 3)
        qa = np.array([e[0] for e in self.edges])
        qb = np.array([e[1] for e in self.edges])
        pa = np.where((qa >= 0)[:, None], xyz[np.maximum(qa, 0)],
                      np.array([self.fixed[e[2]] for e in self.edges]))
        pb = np.where((qb >= 0)[:, None], xyz[np.maximum(qb, 0)],
                      np.array([self.fixed[e[3]] for e in self.edges]))
        return qa, qb, pa, pb

    def energy_numpy(self, x: np.ndarray) -> float:
        """The same energy in plain NumPy, to check the recorded one."""
        _, _, pa, pb = self._ends(x)
        stretch = np.linalg.norm(pb - pa, axis=1) - self.rest
        return float(0.5 * self.k * np.sum(stretch**2) + self.weight * np.sum(x[2::3]))

    def support_lift(self, x: np.ndarray) -> float:
        """Upward force the springs attached to the fixed ring exert on the net."""
        qa, qb, pa, pb = self._ends(x)
        d = pb - pa
        length = np.linalg.norm(d, axis=1)
        tension = self.k * (length - self.rest)                  # > 0: the spring pulls
        pull_on_b = -tension[:, None] * d / length[:, None]      # force on end b, towards a
        lift = np.where(qa < 0, pull_on_b[:, 2], 0.0)            # a fixed: b (free) is pulled
        lift += np.where(qb < 0, -pull_on_b[:, 2], 0.0)          # b fixed: a is pulled
        return float(np.sum(lift))


def run_net(m: int, maxiter: int) -> bool:
    opt = _scipy()
    net = Net(m)
    start = time.perf_counter()
    with Tape("net"):
        xs = [Value(0.0) for _ in range(net.n_params)]
        y = net.energy(xs)
    fn = Function(xs, y)
    recorded = time.perf_counter() - start
    print(f"hanging net, {m} x {m} masses: {net.n_params:,} coordinates, "
          f"{len(net.edges):,} springs, recorded once in {recorded * 1e3:.1f} ms")

    x0 = net.start()
    start = time.perf_counter()
    res = opt.minimize(fn.value_and_grad, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": maxiter, "maxfun": 2 * maxiter,
                                "ftol": 1e-15, "gtol": 1e-10})
    seconds = time.perf_counter() - start
    print(f"  L-BFGS-B: {res.message} after {res.nit} iterations, {res.nfev} evaluations, "
          f"{seconds:.2f} s ({seconds / max(res.nfev, 1) * 1e3:.2f} ms per value_and_grad)")
    z = res.x[2::3].reshape(m, m)
    numpy_energy = net.energy_numpy(res.x)
    lift = net.support_lift(res.x)
    weight = net.weight * m * m
    asym = float(max(np.max(np.abs(z - z[::-1])), np.max(np.abs(z - z.T))))
    grad_max = float(np.max(np.abs(res.jac)))
    print(f"  energy {res.fun:.9g} (NumPy: {numpy_energy:.9g}), max |grad| {grad_max:.1e}")
    print(f"  sag {-z.min():.5f} at the centre; lift from the fixed ring {lift:.6f} for a "
          f"weight of {weight:.6f}; asymmetry {asym:.1e}")
    ok = (res.success and np.isclose(res.fun, numpy_energy, rtol=1e-12, atol=1e-15)
          and abs(lift - weight) < 1e-4 * weight and asym < 1e-4 and z.min() < 0)
    print(f"  {'ok' if ok else 'FAILED'}: the ring carries the weight, the shape is symmetric")
    return bool(ok)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="optimize.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("problem", nargs="?", choices=("all", "rosen", "net"), default="all",
                        help="which problem to solve")
    parser.add_argument("--n", type=int, default=2000, help="Rosenbrock variables (>= 2)")
    parser.add_argument("--start", choices=tuple(STARTS), default="tutorial",
                        help="Rosenbrock start point: SciPy tutorial's (1.3, 0.7, 0.8, 1.9, 1.2) "
                             "repeated, or (-1.2, 1) repeated")
    parser.add_argument("--grid", type=int, default=32, help="masses per side of the net (>= 2)")
    parser.add_argument("--maxiter", type=int, default=20000, help="L-BFGS-B iterations, at most")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n must be at least 2, got {args.n}")
    if args.grid < 2:
        parser.error(f"--grid must be at least 2, got {args.grid}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok = True
    if args.problem in ("all", "rosen"):
        ok &= run_rosen(args.n, args.maxiter, args.start)
    if args.problem in ("all", "net"):
        ok &= run_net(args.grid, args.maxiter)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
