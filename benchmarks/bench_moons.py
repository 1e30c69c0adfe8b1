"""The moons demo end to end, tapegrad against micrograd, in the same process.

    python benchmarks/bench_moons.py                 # 100 steps each (micrograd: minutes)
    python benchmarks/bench_moons.py --quick         # 10 steps each
    python benchmarks/bench_moons.py --steps 30 --json moons.json

Each engine trains micrograd's demo from the same seed: ``MLP(2, [16, 16, 1])`` on 100
``make_moons`` points, SVM max-margin loss + L2, learning rate ``1.0 - 0.9 * k / steps``
(micrograd's schedule for 100 steps). The timed part is building the model and all
the steps; the data set is made once, before. Runs:

* ``tapegrad``: micrograd's loop verbatim, only the import changed;
* ``tapegrad + optim.SGD``: the demo's own ``train_step`` (``examples/moons.py``);
* ``micrograd``: its loop as users run it, garbage collector on.

Wall and CPU time are both reported (CPU time is steadier on a busy machine); per step
and the ratio use wall time. Accuracy is measured after training with one more
(untimed) forward pass.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _checkout  # noqa: E402,F401,I001  (this checkout's tapegrad first)
import numpy as np

import tapegrad
import tapegrad.nn

try:
    import micrograd.engine
    import micrograd.nn
except ImportError:  # pragma: no cover - micrograd is a dev dependency
    sys.exit("the benchmark compares against micrograd: pip install -e '.[dev]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "moons.py"
SEED = 1337


def load_demo():
    """examples/moons.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("moons_demo", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def accuracy(Value, model, X: np.ndarray, y: np.ndarray) -> float:
    scores = [model(list(map(Value, xrow))) for xrow in X]
    return sum((yi > 0) == (s.data > 0) for yi, s in zip(y, scores)) / len(y)


def micrograd_loop(Value, MLP, X: np.ndarray, y: np.ndarray, steps: int,
                   progress: Callable[[int], None]) -> tuple[object, float]:
    """micrograd's demo loop, verbatim but for the engine and the number of steps."""
    random.seed(SEED)
    model = MLP(2, [16, 16, 1])
    total_loss = None
    for k in range(steps):
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        alpha = 1e-4
        reg_loss = alpha * sum(p * p for p in model.parameters())
        total_loss = data_loss + reg_loss
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / steps
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        progress(k)
    return model, float(total_loss.data)


def demo_loop(demo, X: np.ndarray, y: np.ndarray, steps: int,
              progress: Callable[[int], None]) -> tuple[object, float]:
    """The demo's own training: ``train_step`` with ``tapegrad.optim.SGD``."""
    random.seed(SEED)
    model = tapegrad.nn.MLP(2, [16, 16, 1])
    opt = demo.make_optimizer("sgd", model)
    loss = None
    for k in range(steps):
        opt.lr = demo.learning_rate(demo.SGD_LR, k, steps)
        loss, _ = demo.train_step(model, X, y, opt)
        progress(k)
    return model, loss


def run(name: str, Value, train: Callable, X: np.ndarray, y: np.ndarray,
        steps: int) -> dict:
    every = max(1, steps // 10)

    def progress(k: int) -> None:
        if (k + 1) % every == 0 or k + 1 == steps:
            print(f"  {name}: step {k + 1}/{steps}, {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)

    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    model, last_loss = train(X, y, steps, progress)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "per_step_ms": seconds / steps * 1e3,
            "last_loss": last_loss, "accuracy": accuracy(Value, model, X, y)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument("--quick", action="store_true", help="10 steps (a smoke run)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    steps = 10 if args.quick else args.steps
    if steps < 1:
        parser.error("--steps must be at least 1")

    demo = load_demo()
    X, y = demo.make_data(SEED)
    res = {"steps": steps, "python": sys.version.split()[0], "numpy": np.__version__,
           "tapegrad": tapegrad.__version__, "cpus": os.cpu_count()}
    tg, mg = tapegrad, micrograd
    res["tapegrad"] = run("tapegrad", tg.Value, lambda X, y, n, p: micrograd_loop(
        tg.Value, tg.nn.MLP, X, y, n, p), X, y, steps)
    res["tapegrad_optim_sgd"] = run("tapegrad + optim.SGD", tg.Value,
                                    lambda X, y, n, p: demo_loop(demo, X, y, n, p),
                                    X, y, steps)
    gc.enable()                                 # micrograd as users run it
    res["micrograd"] = run("micrograd", mg.engine.Value, lambda X, y, n, p: micrograd_loop(
        mg.engine.Value, mg.nn.MLP, X, y, n, p), X, y, steps)
    ours, theirs = res["tapegrad"], res["micrograd"]
    res["speedup"] = theirs["seconds"] / ours["seconds"]
    res["speedup_optim_sgd"] = theirs["seconds"] / res["tapegrad_optim_sgd"]["seconds"]
    res["speedup_cpu"] = theirs["cpu_seconds"] / ours["cpu_seconds"]
    res["loss_rel_diff"] = abs(ours["last_loss"] - theirs["last_loss"]) / abs(theirs["last_loss"])

    print(f"moons demo, {steps} steps (model init + steps; data made once before)")
    print(f"{'engine':22s} {'wall':>9s} {'cpu':>9s} {'per step':>10s} {'last loss':>20s} "
          f"{'accuracy':>9s}")
    for key, label in (("tapegrad", "tapegrad"), ("tapegrad_optim_sgd", "tapegrad + optim.SGD"),
                       ("micrograd", "micrograd (gc on)")):
        r = res[key]
        print(f"{label:22s} {r['seconds']:8.2f}s {r['cpu_seconds']:8.2f}s "
              f"{r['per_step_ms']:8.1f}ms {r['last_loss']!r:>20s} {r['accuracy'] * 100:8.1f}%")
    print(f"speedup (wall): {res['speedup']:.1f}x (target >= 20x); with optim.SGD "
          f"{res['speedup_optim_sgd']:.1f}x; in CPU time {res['speedup_cpu']:.1f}x")
    print(f"last losses differ by "
          f"{res['loss_rel_diff']:.1e} (relative)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
