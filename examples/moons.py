"""micrograd's moons demo on tapegrad: same data, model, loss and schedule.

    python examples/moons.py                    # 100 SGD steps, picture in moons.png
    python examples/moons.py --steps 20 --out boundary.png --seed 7
    python examples/moons.py --optimizer adam   # Adam instead of micrograd's SGD
    python examples/moons.py --replay           # record the loss once, replay each step

Needs scikit-learn (the data) and matplotlib (the picture): ``pip install
"tapegrad[examples]"``, or ``pip install -e ".[examples]"`` in a checkout.

The default run is micrograd's demo with the import changed and its update loop
spelled ``SGD(...).step()`` (the same float operations, so the same numbers bit for
bit): 100 points of ``make_moons(noise=0.1)``, ``MLP(2, [16, 16, 1])``, SVM max-margin
loss with L2 regularization, learning rate ``1.0 - 0.9 * k / steps``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from tapegrad import Function, Tape, Value
from tapegrad.nn import MLP
from tapegrad.optim import SGD, Adam, Optimizer

SGD_LR = 1.0
"""micrograd's starting learning rate; it decays linearly to 10% of it."""
ADAM_LR = 0.05
"""Adam's starting learning rate (same linear decay): 100% accuracy from step ~60."""
ALPHA = 1e-4
"""Weight of the L2 regularization term."""
INSTALL_HINT = 'pip install "tapegrad[examples]"'
"""What to install for the data set and the picture (scikit-learn, matplotlib)."""


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """micrograd's data: seed NumPy and ``random``, 100 moons points, labels -1/+1."""
    try:
        from sklearn.datasets import make_moons
    except ImportError:
        sys.exit(f"examples/moons.py needs scikit-learn for its data set: {INSTALL_HINT}")
    np.random.seed(seed)
    random.seed(seed)
    X, y = make_moons(n_samples=100, noise=0.1)
    return X, y * 2 - 1


def loss(model: MLP, X: np.ndarray, y: np.ndarray) -> tuple[Value, float]:
    """micrograd's SVM max-margin loss with L2 regularization, and the accuracy."""
    total_loss, scores = loss_and_scores(model, X, y)
    return total_loss, accuracy(scores, y)


def loss_and_scores(model: MLP, X: np.ndarray, y: np.ndarray) -> tuple[Value, list[Value]]:
    """The loss Value and the model's score for every point."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = ALPHA * sum(p * p for p in model.parameters())
    return data_loss + reg_loss, scores


def accuracy(scores: Sequence[Value], y: np.ndarray) -> float:
    """Share of points whose score has the sign of their label."""
    hits = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
    return sum(hits) / len(hits)


def make_optimizer(name: str, model: MLP) -> Optimizer:
    """``"sgd"`` (micrograd's plain update) or ``"adam"``, at their starting rates."""
    if name == "sgd":
        return SGD(model.parameters(), lr=SGD_LR)
    if name == "adam":
        return Adam(model.parameters(), lr=ADAM_LR)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def learning_rate(base: float, k: int, steps: int) -> float:
    """micrograd's schedule, ``base * (1 - 0.9 * k / steps)``: from ``base`` down to ``base / 10``.

    With ``base == 1.0`` and 100 steps this is exactly micrograd's ``1.0 - 0.9 * k / 100``.
    """
    return base * (1.0 - 0.9 * k / steps)


def train_step(model: MLP, X: np.ndarray, y: np.ndarray, opt: Optimizer) -> tuple[float, float]:
    """One step at ``opt.lr``: forward, ``zero_grad``, ``backward``, update.

    Returns the loss and accuracy before the update (what micrograd prints). A mode
    that records the loss once and replays it would replace only this function.
    """
    total_loss, acc = loss(model, X, y)
    model.zero_grad()
    total_loss.backward()
    opt.step()
    return total_loss.data, acc


StepFn = Callable[[MLP, np.ndarray, np.ndarray, Optimizer], tuple[float, float]]


def replay_step(model: MLP, X: np.ndarray, y: np.ndarray) -> StepFn:
    """A step function that records the loss once, then replays the tape every step.

    ``tape.forward()`` recomputes every row from the parameters' current data, so each
    step does what ``train_step`` does without recording: the same losses, bit for bit.
    """
    with Tape("moons") as tape:
        total_loss, scores = loss_and_scores(model, X, y)
    fresh = True          # right after recording, the tape already holds step 0's values

    def step(model: MLP, X: np.ndarray, y: np.ndarray, opt: Optimizer) -> tuple[float, float]:
        nonlocal fresh
        if not fresh:
            tape.forward()
        fresh = False
        model.zero_grad()
        total_loss.backward()
        result = total_loss.data, accuracy(scores, y)
        opt.step()
        return result

    return step


def train(model: MLP, X: np.ndarray, y: np.ndarray, opt: Optimizer, steps: int,
          step: StepFn = train_step) -> list[tuple[float, float]]:
    """``steps`` steps from ``opt.lr`` down to a tenth of it, one ``step`` each; prints
    micrograd's progress line per step and returns the (loss, accuracy) pairs."""
    base = opt.lr
    history = []
    for k in range(steps):
        opt.lr = learning_rate(base, k, steps)
        total_loss, acc = step(model, X, y, opt)
        print(f"step {k} loss {total_loss}, accuracy {acc * 100}%")
        history.append((total_loss, acc))
    return history


def plot_boundary(model: MLP, X: np.ndarray, y: np.ndarray, path: str) -> bool:
    """Draw the decision boundary and the points to ``path``; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no picture: matplotlib is missing; {INSTALL_HINT} to draw the decision "
              f"boundary to {path}")
        return False
    x_min, x_max = X[:, 0].min() - 1, X[:, 0].max() + 1
    y_min, y_max = X[:, 1].min() - 1, X[:, 1].max() + 1
    xx, yy = np.meshgrid(np.linspace(x_min, x_max, 250), np.linspace(y_min, y_max, 250))
    with Tape("boundary"):                      # the model on one point, recorded once ...
        point = [Value(0.0), Value(0.0)]
        score = model(point)
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    Z = Function(inputs=point, outputs=score)(grid)[:, 0].reshape(xx.shape) > 0  # ... all 62,500
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.contourf(xx, yy, Z, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k")
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_title("tapegrad: MLP(2, [16, 16, 1]) on make_moons")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"decision boundary written to {path}")
    return True


def parse_args(argv: Sequence[str | os.PathLike[str]] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="moons.py", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="training steps")
    parser.add_argument("--out", default="moons.png", help="decision-boundary picture (PNG)")
    parser.add_argument("--seed", type=int, default=1337,
                        help="seed of numpy (data) and random (initial weights)")
    parser.add_argument("--replay", action="store_true",
                        help="record the loss once and replay the tape each step "
                             "(same losses, much faster)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help=f"sgd: micrograd's update, lr {SGD_LR:g} decaying to "
                             f"{SGD_LR / 10:g}; adam: Adam, lr {ADAM_LR:g} decaying to "
                             f"{ADAM_LR / 10:g}")
    args = parser.parse_args(None if argv is None else [os.fspath(a) for a in argv])
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        parser.error(f"--out: folder {folder} does not exist")
    return args


def main(argv: Sequence[str | os.PathLike[str]] | None = None) -> int:
    """Run the demo; ``argv`` as on the command line (default ``sys.argv[1:]``)."""
    args = parse_args(argv)
    X, y = make_data(args.seed)
    model = MLP(2, [16, 16, 1])
    print(model)
    print("number of parameters", len(model.parameters()))
    opt = make_optimizer(args.optimizer, model)

    start = time.perf_counter()
    step = replay_step(model, X, y) if args.replay else train_step
    train(model, X, y, opt, args.steps, step=step)
    mode = "replayed" if args.replay else "recorded"
    print(f"{args.steps} steps ({mode}) in {time.perf_counter() - start:.2f} s ({opt!r})")
    plot_boundary(model, X, y, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
