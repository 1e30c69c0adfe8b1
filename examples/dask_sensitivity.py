"""Per-sample sensitivities of a recorded model over 10^7 inputs, on a Dask cluster.

    python examples/dask_sensitivity.py                       # 10^7 samples, 2 local workers
    python examples/dask_sensitivity.py --n 100000 --out s.png
    python examples/dask_sensitivity.py --address tcp://scheduler:8786   # a real cluster

The model is a damped oscillator ``x'' = -k x - c x'`` integrated with ``STEPS``
explicit Euler steps from ``x = 1, x' = 0``, recorded once on a tape; its output is the
position at ``t = T``. ``Function([k, c], x_T).value_and_grad`` gives ``x_T`` and its
gradient ``(d x_T / dk, d x_T / dc)`` for every sample. The samples ``(k, c)`` are drawn
uniformly on the workers (Dask's random arrays), evaluated block by block on the
cluster (the Function is pickled into the graph) and reduced there to a 2-D histogram
of the mean ``d x_T / dk``, so nothing of size n comes back. Needs ``pip install
"tapegrad[dask,examples]"`` (Dask, distributed, matplotlib).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tapegrad import DASK_WORKER_ENV, Function, Tape, Value

STEPS = 40          # Euler steps
T = 4.0             # end time
K_RANGE = (0.5, 4.0)
C_RANGE = (0.0, 1.0)
BINS = 80


def record_model() -> Function:
    """The oscillator's end position as a Function of ``(k, c)``."""
    with Tape("oscillator"):
        k, c = Value(1.0, label="k"), Value(0.1, label="c")
        x, v = Value(1.0), Value(0.0)        # initial state: leaves, frozen constants
        dt = T / STEPS
        for _ in range(STEPS):
            x, v = x + dt * v, v - dt * (k * x + c * v)
    return Function([k, c], x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000, help="samples (default 10^7)")
    p.add_argument("--chunk", type=int, default=250_000, help="samples per block")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--address", help="scheduler of an existing cluster (no local one)")
    p.add_argument("--out", default="dask_sensitivity.png", help="the picture")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.n < 1 or args.chunk < 1 or args.workers < 1:
        p.error("--n, --chunk and --workers must be positive")
    try:
        import dask.array as da
        from distributed import Client, LocalCluster, progress
    except ImportError:
        sys.exit('examples/dask_sensitivity.py needs Dask: pip install "tapegrad[dask]"')

    f = record_model()
    cluster = None
    if args.address:
        client = Client(args.address)
    else:
        import dask
        # keep NumPy's freed temporaries for reuse on the workers (tapegrad.DASK_WORKER_ENV)
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **DASK_WORKER_ENV}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        rng = da.random.default_rng(0)
        chunk = min(args.chunk, args.n)
        lo = np.array([K_RANGE[0], C_RANGE[0]])
        hi = np.array([K_RANGE[1], C_RANGE[1]])
        X = lo + (hi - lo) * rng.random((args.n, 2), chunks=(chunk, 2))
        value, grad = f.value_and_grad(X)                     # lazy: nothing runs yet
        edges = [np.linspace(*K_RANGE, BINS + 1), np.linspace(*C_RANGE, BINS + 1)]
        total, *_ = da.histogram2d(X[:, 0], X[:, 1], bins=edges, weights=grad[:, 0])
        count, *_ = da.histogram2d(X[:, 0], X[:, 1], bins=edges)
        worst = abs(grad[:, 0]).max()
        start = time.perf_counter()
        futures = client.compute([total, count, worst, value.mean()])
        if not args.no_progress:
            progress(futures)
            print()
        total, count, worst, mean = client.gather(futures)
        seconds = time.perf_counter() - start
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"{args.n:,} samples in {seconds:.2f} s ({args.n / seconds:,.0f} per second with "
          f"gradients); mean x(T) = {mean:.6f}; max |dx/dk| = {worst:.4f}")
    plot(total / np.maximum(count, 1), args.out, args.n)
    print(f"wrote {args.out}")
    return 0


def plot(mean_grad: np.ndarray, path: str, n: int) -> None:
    """The mean ``d x_T / dk`` per ``(k, c)`` bin."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    lim = float(np.abs(mean_grad).max()) or 1.0
    im = ax.imshow(mean_grad.T, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim,
                   vmax=lim, extent=(*K_RANGE, *C_RANGE))
    fig.colorbar(im, ax=ax, label="mean d x(T) / dk")
    ax.set_xlabel("stiffness k")
    ax.set_ylabel("damping c")
    ax.set_title(f"sensitivity of a damped oscillator, {n:,} samples on Dask")
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
