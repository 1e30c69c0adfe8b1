"""micrograd's graph pictures, drawn from a tapegrad tape.

    python examples/complex_viz.py                    # expression.svg and neuron.svg here
    python examples/complex_viz.py --expression docs/img/expression.svg \\
                                   --neuron docs/img/neuron.svg

Two pictures: the expression of micrograd.rs's README
(``b = 35 + a**-3 / -1.5; c = relu(b)``) and micrograd's ``Neuron(2)`` applied to two
inputs (``random.seed(1337)``, as in micrograd's trace_graph notebook), each after
``backward()``. Needs pydot and Graphviz's ``dot`` program: ``pip install "tapegrad[viz]"``
and the Graphviz system package (``apt-get install graphviz``, ``brew install graphviz``,
``conda install -c conda-forge graphviz`` or ``winget install graphviz``). Without pydot
it says so in one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from tapegrad import Value
from tapegrad.nn import Neuron
from tapegrad.viz import GraphvizNotFoundError, draw_dot, save_dot

INSTALL_HINT = ('pip install "tapegrad[viz]" and the Graphviz system package '
                "(apt-get install graphviz, brew install graphviz, "
                "conda install -c conda-forge graphviz, or winget install graphviz)")


def expression() -> Value:
    """micrograd.rs's example, with the Values labelled."""
    a = Value(5.0, label="a")
    b = 35.0 + a.pow(-3.0) / -1.5
    b.label = "b"
    c = b.relu()
    c.label = "c"
    c.backward()
    return c


def neuron() -> Value:
    """micrograd's ``Neuron(2)`` on ``x = [1.0, -2.0]``, its parameters labelled."""
    random.seed(1337)
    n = Neuron(2)
    for i, w in enumerate(n.w, start=1):
        w.label = f"w{i}"
    n.b.label = "b"
    x = [Value(1.0, label="x1"), Value(-2.0, label="x2")]
    y = n(x)
    y.label = "y"
    y.backward()
    return y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expression", type=Path, default=Path("expression.svg"),
                        help="picture of micrograd.rs's expression (default: %(default)s)")
    parser.add_argument("--neuron", type=Path, default=Path("neuron.svg"),
                        help="picture of Neuron(2) on two inputs (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import pydot  # noqa: F401  (draw_dot builds pydot graphs)
    except ImportError:
        print(f"examples/complex_viz.py needs pydot: {INSTALL_HINT}", file=sys.stderr)
        return 1
    try:
        for path, root in ((args.expression, expression()), (args.neuron, neuron())):
            written = save_dot(draw_dot(root), path)
            print(f"wrote {written} (root data {root.data:.4f})")
    except GraphvizNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
