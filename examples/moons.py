"""micrograd's moons demo on tapegrad: same data, model, loss and schedule.

    python examples/moons.py                 # 100 SGD steps, picture in moons.png
    python examples/moons.py --steps 20 --out boundary.png --seed 7

The user code is micrograd's demo with the import changed; only the timing lines
and the flags are new.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np

from tapegrad import Value
from tapegrad.nn import MLP


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import make_moons
    except ImportError:
        sys.exit("examples/moons.py needs scikit-learn: pip install -e '.[examples]'")
    np.random.seed(seed)
    random.seed(seed)
    X, y = make_moons(n_samples=100, noise=0.1)
    return X, y * 2 - 1


def loss(model: MLP, X: np.ndarray, y: np.ndarray) -> tuple[Value, float]:
    """micrograd's SVM max-margin loss with L2 regularization, and the accuracy."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    alpha = 1e-4
    reg_loss = alpha * sum(p * p for p in model.parameters())
    total_loss = data_loss + reg_loss
    accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
    return total_loss, sum(accuracy) / len(accuracy)


def plot_boundary(model: MLP, X: np.ndarray, y: np.ndarray, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no picture: matplotlib is missing (pip install -e '.[examples]')")
        return
    h = 0.25
    x_min, x_max = X[:, 0].min() - 1, X[:, 0].max() + 1
    y_min, y_max = X[:, 1].min() - 1, X[:, 1].max() + 1
    xx, yy = np.meshgrid(np.arange(x_min, x_max, h), np.arange(y_min, y_max, h))
    Z = np.array([model([Value(a), Value(b)]).data > 0
                  for a, b in zip(xx.ravel(), yy.ravel())]).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.contourf(xx, yy, Z, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k")
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_title("tapegrad: MLP(2, [16, 16, 1]) on make_moons")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"decision boundary written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="SGD steps (default 100)")
    parser.add_argument("--out", default="moons.png", help="decision-boundary picture")
    parser.add_argument("--seed", type=int, default=1337, help="numpy and random seed")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    X, y = make_data(args.seed)
    model = MLP(2, [16, 16, 1])
    print(model)
    print("number of parameters", len(model.parameters()))

    start = time.perf_counter()
    for k in range(args.steps):
        total_loss, acc = loss(model, X, y)
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        print(f"step {k} loss {total_loss.data}, accuracy {acc * 100}%")
    print(f"{args.steps} steps in {time.perf_counter() - start:.2f} s")
    plot_boundary(model, X, y, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
