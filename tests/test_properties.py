"""Property tests (hypothesis) on random expression DAGs over every differentiable op.

A *program* is a list of steps drawn from :data:`tapegrad.ops.OPS` itself, so an op
added to the table is generated here as soon as it has an entry in ``DOMAIN`` (the
test ``test_every_differentiable_op_is_generated`` fails until it does). The same
program runs on tapegrad Values and on plain Python floats (each op by the table's
scalar rule, which tests/test_ops.py checks against NumPy and finite differences):

* eager values equal the float re-evaluation bit for bit (recording wires and stores
  every row faithfully), leaf gradients equal central finite differences of it (the
  reverse sweep knows nothing of these);
* on the ops micrograd has, values and leaf gradients equal micrograd's;
* ``Tape.forward()`` after new leaf data equals recording again; ``Function`` batches
  equal separate evaluations;
* ``Tape.save``/``Tape.load`` round-trips every column bit for bit, special floats
  included;
* ``Tape.stats()`` counts agree with the columns;
* DOT pictures parse back with one node per row drawn.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from micrograd.engine import Value as MValue

import tapegrad
from tapegrad import Function, Tape, Value, scope
from tapegrad.ops import OPS, Op
from tapegrad.tape import ROW_BYTES

EXAMPLES = int(os.environ.get("TAPEGRAD_EXAMPLES", "40"))
"""Examples per property; ``TAPEGRAD_EXAMPLES=2000 pytest tests/test_properties.py`` to hunt."""
FAST = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=max(1, EXAMPLES // 2), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

DIFFERENTIABLE = [op for op in OPS if op.arity > 0 and op.partials is not None]
"""Every op that computes and has partials: leaves and guards (comparisons) excluded."""

BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "**": operator.pow}
"""How a binary op is written in Python, by its symbol in the op table."""

# Results of these ops are correctly rounded IEEE operations, so NumPy (replay) and
# Python (recording) agree on them bit for bit; the others (tanh, exp, log, pow, ...)
# come from libm while recording and from NumPy's own kernels in a replay.
EXACT_OPS = {"add", "sub", "mul", "div", "neg", "relu", "abs", "sqrt", "leaky_relu",
             "maximum", "minimum"}


# --------------------------------------------------------------------------------------
# op domains: how each op's operands are kept where the op is smooth
# --------------------------------------------------------------------------------------

def _identity(v):
    return v


def _positive(v):
    """Any real -> [0.5, inf): for log, sqrt, a pow base, a divisor (floats or Values)."""
    return v * v + 0.5


def _positive_const(c: float) -> float:
    return abs(c) + 0.5


def _nonzero_const(c: float) -> float:
    return math.copysign(abs(c) + 0.5, c)


def _shifted(v):
    return v + 3.0


def _shifted_const(c: float) -> float:
    return c + 3.0


@dataclass(frozen=True)
class Domain:
    """Operand transforms that keep an op smooth; ``kinks``: points where its
    derivative jumps (finite differences are not checked within reach of them)."""

    x: Callable = _identity                  # the Value in the first operand
    y: Callable = _identity                  # the Value in the second operand
    cx: Callable[[float], float] = float     # an immediate constant in the first operand
    cy: Callable[[float], float] = float     # an immediate constant in the second operand
    kinks: tuple[float, ...] = ()


DOMAIN: dict[str, Domain] = {
    "add": Domain(), "sub": Domain(), "mul": Domain(),
    "div": Domain(y=_positive, cy=_nonzero_const),
    "pow": Domain(x=_positive, cx=_positive_const),
    "neg": Domain(), "relu": Domain(kinks=(0.0,)), "tanh": Domain(), "sigmoid": Domain(),
    "exp": Domain(), "log": Domain(x=_positive), "sqrt": Domain(x=_positive),
    "abs": Domain(kinks=(0.0,)), "sin": Domain(), "cos": Domain(),
    "atan2": Domain(y=_positive, cy=_positive_const), "log1p": Domain(x=_positive),
    "expm1": Domain(), "leaky_relu": Domain(kinks=(0.0,)), "heaviside": Domain(kinks=(0.0,)),
    # nodes stay in [-0.5, 0.5]: the second operand shifted by 3 is always the larger
    "maximum": Domain(y=_shifted, cx=_shifted_const, cy=_shifted_const),
    "minimum": Domain(y=_shifted, cx=_shifted_const, cy=_shifted_const),
}


def squash(v):
    """Keep every node in [-0.5, 0.5] (smooth, correctly rounded ops only), so deep
    programs neither overflow nor lose the finite differences' precision."""
    return v / (v * v + 1.0)


# --------------------------------------------------------------------------------------
# programs
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    op: str        # name in the op table
    form: str      # "u" unary; "vv" Value op Value; "vc" Value op const; "cv" const op Value
    i: int         # first operand node
    j: int         # second operand node
    c: float       # the immediate constant, before its domain transform


@dataclass(frozen=True)
class Program:
    leaves: tuple[float, ...]
    steps: tuple[Step, ...]
    outputs: tuple[tuple[int, float], ...]      # (node, weight): root = sum of weight * node

    @property
    def ops(self) -> set[str]:
        return {s.op for s in self.steps}


FORMS = {1: ("u",), 2: ("vv", "vc", "cv")}
small = st.floats(-2.0, 2.0, allow_nan=False)


@st.composite
def programs(draw, ops: list[Op] = DIFFERENTIABLE, max_leaves: int = 4,
             max_steps: int = 10) -> Program:
    n_leaves = draw(st.integers(1, max_leaves))
    leaves = tuple(draw(st.lists(small, min_size=n_leaves, max_size=n_leaves)))
    steps = []
    for k in range(draw(st.integers(1, max_steps))):
        n = n_leaves + k
        op = draw(st.sampled_from(ops))
        steps.append(Step(op.name, draw(st.sampled_from(FORMS[op.arity])),
                          draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1)),
                          draw(small)))
    n = n_leaves + len(steps)
    outputs = draw(st.lists(st.tuples(st.integers(0, n - 1), small), min_size=1, max_size=3))
    return Program(leaves, tuple(steps), ((n - 1, 1.0), *outputs))


def operands(step: Step, nodes: list):
    """The step's operands after the op's domain transforms (Values/floats or constants)."""
    d = DOMAIN.get(step.op, Domain())
    if step.form == "u":
        return d.x(nodes[step.i]), None
    if step.form == "vv":
        return d.x(nodes[step.i]), d.y(nodes[step.j])
    if step.form == "vc":
        return d.x(nodes[step.i]), d.cy(step.c)
    return d.cx(step.c), d.y(nodes[step.i])


def apply_value(op: Op, x, y):
    """``op`` through the Value facade, the way users write it."""
    if op.arity == 2:
        if op.symbol in BINARY:
            return BINARY[op.symbol](x, y)
        return getattr(tapegrad, op.name)(x, y)        # function-style: maximum(a, b)
    method = getattr(x, op.name, None)
    return method() if method is not None else getattr(operator, op.name)(x)


def apply_float(op: Op, x: float, y: float | None) -> float:
    """``op`` on plain floats by the op table's scalar rule."""
    return op.evaluate(x, 0.0 if y is None else y)


def run(program: Program, leaves: list, apply: Callable, kinks: list | None = None):
    """Run ``program`` on ``leaves`` (Values or floats); (root, every node).

    ``kinks`` collects the distance of each kinked op's argument to its nearest kink.
    """
    nodes = list(leaves)
    for step in program.steps:
        op = BY_NAME[step.op]
        x, y = operands(step, nodes)
        if kinks is not None and DOMAIN.get(step.op, Domain()).kinks:
            kinks.extend(abs(x - k) for k in DOMAIN[step.op].kinks)
        nodes.append(squash(apply(op, x, y)))
    root = nodes[program.outputs[0][0]]
    for k, w in program.outputs[1:]:
        root = root + nodes[k] * w
    return root, nodes


BY_NAME = {op.name: op for op in OPS}


def record(program: Program, leaves=None, name: str | None = None):
    """Record ``program`` on a new explicit tape; (tape, leaf Values, root, nodes)."""
    with Tape(name) as tape:
        xs = [Value(x) for x in (program.leaves if leaves is None else leaves)]
        root, nodes = run(program, xs, apply_value)
    return tape, xs, root, nodes


def float_eval(program: Program, leaves) -> float:
    return run(program, list(leaves), apply_float)[0]


def ancestors(tape: Tape, root: int) -> set[int]:
    """Rows ``root`` depends on (itself included), from the public ``args`` view."""
    args = tape.args
    found = {root}
    for r in range(root, -1, -1):
        if r in found:
            found.update(int(a) for a in args[r] if a >= 0)
    return found


# --------------------------------------------------------------------------------------
# the generator covers the op table
# --------------------------------------------------------------------------------------

def test_every_differentiable_op_is_generated():
    """A new op in the table needs a DOMAIN entry (where it is smooth) to be tested here."""
    assert DIFFERENTIABLE, "the op table has no differentiable op"
    assert {op.name for op in DIFFERENTIABLE} == set(DOMAIN)
    for op in DIFFERENTIABLE:
        if op.arity == 2:
            assert op.symbol in BINARY or hasattr(tapegrad, op.name), \
                f"{op.name}: no Python operator for {op.symbol!r} nor tapegrad.{op.name}"
        else:
            assert hasattr(Value, op.name) or hasattr(operator, op.name), op.name


# --------------------------------------------------------------------------------------
# values and gradients against a plain-float re-evaluation
# --------------------------------------------------------------------------------------

@FAST
@given(programs())
def test_values_equal_and_gradients_match_finite_differences(program):
    kinks: list[float] = []
    float_root, float_nodes = run(program, list(program.leaves), apply_float, kinks)
    tape, xs, root, nodes = record(program)
    # eager recording is the scalar rule, bit for bit, for every node
    assert [v.data for v in nodes] == float_nodes
    assert root.data == float_root
    root.backward()
    assume(all(d > 1e-4 for d in kinks))           # finite differences across a kink lie
    for k, x in enumerate(program.leaves):
        h = 1e-6 * max(1.0, abs(x))
        up = list(program.leaves)
        down = list(program.leaves)
        up[k] += h
        down[k] -= h
        fd = (float_eval(program, up) - float_eval(program, down)) / (up[k] - down[k])
        assert xs[k].grad == pytest.approx(fd, rel=1e-5, abs=1e-6), (k, program)


@FAST
@given(programs(), st.integers(0, 3))
def test_leaf_gradients_accumulate_and_non_ancestors_get_none(program, repeats):
    tape, xs, root, nodes = record(program)
    root.backward()
    once = [x.grad for x in xs]
    needed = ancestors(tape, root.row)
    assert set(np.flatnonzero(tape.grads).tolist()) <= needed
    for r in set(range(len(tape))) - needed:         # not an ancestor: never touched
        assert tape.grads[r] == 0.0
    for _ in range(repeats):
        root.backward()
    for x, g in zip(xs, once):
        assert x.grad == pytest.approx(g * (1 + repeats), rel=1e-12, abs=0)


# --------------------------------------------------------------------------------------
# micrograd, on the ops it has
# --------------------------------------------------------------------------------------

MICROGRAD_OPS = [BY_NAME[n] for n in ("add", "sub", "mul", "div", "pow", "neg", "relu")]


@st.composite
def micrograd_programs(draw) -> Program:
    program = draw(programs(MICROGRAD_OPS))
    steps = []
    for s in program.steps:      # micrograd raises only Values to constant powers
        if s.op == "pow":
            s = Step("pow", "vc", s.i, s.j, s.c)
        steps.append(s)
    return Program(program.leaves, tuple(steps), program.outputs)


@FAST
@given(micrograd_programs())
def test_values_and_leaf_gradients_equal_micrograds(program):
    tape, xs, root, nodes = record(program)
    root.backward()
    ms = [MValue(x) for x in program.leaves]
    mroot, mnodes = run(program, ms, apply_value)
    mroot.backward()
    # micrograd divides as a * b**-1 and subtracts as a + (-b): last-bit differences
    for v, m in zip(nodes, mnodes):
        assert v.data == pytest.approx(m.data, rel=1e-9, abs=1e-12)
    for x, m in zip(xs, ms):
        assert x.grad == pytest.approx(m.grad, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------
# replay equals recording again
# --------------------------------------------------------------------------------------

@FAST
@given(programs(), st.lists(small, min_size=4, max_size=4))
def test_forward_after_new_leaf_data_equals_recording_again(program, new):
    new = new[: len(program.leaves)]
    tape, xs, root, nodes = record(program)
    unchanged = tape.values.copy()
    tape.forward()                                   # same leaves
    exact = program.ops <= EXACT_OPS
    if exact:
        assert tape.values.tobytes() == unchanged.tobytes()
    else:
        np.testing.assert_allclose(tape.values, unchanged, rtol=1e-12, atol=1e-13)
    for x, v in zip(xs, new):
        x.data = v
    tape.forward()
    root.backward()
    fresh, fxs, froot, _ = record(program, new)
    froot.backward()
    assert len(fresh) == len(tape)
    if exact:
        assert tape.values.tobytes() == fresh.values.tobytes()
    else:
        np.testing.assert_allclose(tape.values, fresh.values, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose([x.grad for x in xs], [x.grad for x in fxs],
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_replay_of_each_op_with_unchanged_leaves(op):
    """Correctly rounded ops replay bit for bit; the others (libm while recording, NumPy's
    kernels in a replay) within a few units in the last place."""
    rng = np.random.default_rng(op.code)
    samples = rng.uniform(-3, 3, size=(500, 2))
    with Tape() as tape:
        for a, b in samples:
            x, y = operands(Step(op.name, "vv" if op.arity == 2 else "u", 0, 1, 0.0),
                            [Value(a), Value(b)])
            apply_value(op, x, y)
            if op.arity == 2:
                apply_value(op, x, DOMAIN[op.name].cy(b))      # immediate on the right
                apply_value(op, DOMAIN[op.name].cx(a), y)      # and on the left
    recorded = tape.values.copy()
    tape.forward()
    if op.name in EXACT_OPS:
        assert tape.values.tobytes() == recorded.tobytes()
    else:
        np.testing.assert_array_max_ulp(tape.values, recorded, maxulp=4)


@FAST
@given(programs(max_leaves=3), st.lists(st.lists(small, min_size=3, max_size=3),
                                        min_size=1, max_size=6))
def test_function_batches_equal_separate_evaluations(program, batch):
    tape, xs, root, nodes = record(program)
    X = np.array(batch)[:, : len(xs)]
    f = Function(inputs=xs, outputs=[root, nodes[-1]])
    out = f(X)
    assert out.shape == (len(X), 2)
    for k, row in enumerate(X):
        assert f(row).tobytes() == out[k].tobytes()           # one sample = its batch row
        fresh, _, froot, fnodes = record(program, row.tolist())
        np.testing.assert_allclose(out[k], [froot.data, fnodes[-1].data],
                                   rtol=1e-12, atol=1e-13)
    g = Function(inputs=xs, outputs=root)
    values, grads = g.value_and_grad(X)
    assert values.shape == (len(X),) and grads.shape == X.shape
    np.testing.assert_array_equal(values, out[:, 0])
    for k, row in enumerate(X):
        _, fxs, froot, _ = record(program, row.tolist())
        froot.backward()
        np.testing.assert_allclose(grads[k], [x.grad for x in fxs], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------

COLUMNS = ("opcodes", "args", "consts", "values", "grads", "levels", "scope_ids")
special = st.one_of(small, st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308]))
TEXT = st.characters(codec="utf-8", exclude_categories=("Cs",))
labels = st.text(TEXT, max_size=12)


@SLOW
@given(programs(), st.lists(special, min_size=4, max_size=4), labels,
       st.lists(st.text(TEXT, min_size=1, max_size=6), max_size=2))
def test_save_load_round_trip_is_bit_exact(tmp_path_factory, program, leaves, label, scopes):
    leaves = leaves[: len(program.leaves)]
    with Tape("saved") as tape:
        xs = [Value(x, label=label) for x in leaves]
        with scope(scopes[0]) if scopes else _nothing():
            with scope(scopes[-1]) if scopes else _nothing():
                root, nodes = run(program, xs, apply_value)
        root.label = label[::-1]
        root.backward()
    path = tmp_path_factory.mktemp("tapes") / "t.npz"
    tape.save(path)
    loaded = Tape.load(path)
    assert loaded.name == "saved" and len(loaded) == len(tape)
    for name in COLUMNS:
        a, b = getattr(tape, name), getattr(loaded, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert loaded.labels == tape.labels and loaded.scope_names == tape.scope_names
    assert loaded.dump(10) == tape.dump(10)
    # the loaded tape works like the original: same backward, same replay
    for t in (tape, loaded):
        for r in range(len(xs)):
            t.value(r).grad = 0.0
        t.value(root.row).backward()
    assert loaded.grads.tobytes() == tape.grads.tobytes()
    tape.forward()
    loaded.forward()
    assert loaded.values.tobytes() == tape.values.tobytes()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_labels_ending_in_nul_survive_save_load(tmp_path):
    with Tape("nul") as tape:
        with scope("s\x00"):
            Value(1.0, label="a\x00") * 2
    tape.save(tmp_path / "nul.npz")
    loaded = Tape.load(tmp_path / "nul.npz")
    assert loaded.labels == {0: "a\x00"}
    assert loaded.scope_names == ("", "s\x00")


# --------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------

@FAST
@given(programs(), st.booleans())
def test_stats_counts_are_consistent(program, compact):
    tape, xs, root, nodes = record(program)
    if compact:
        del nodes
        tape.compact()                       # only the root's rows and the leaves stay
    st_ = tape.stats()
    n = len(tape)
    ops, args, levels = tape.opcodes, tape.args, tape.levels
    assert st_.nodes == n and sum(st_.ops.values()) == n
    assert st_.ops == {OPS[c].name: int(k) for c, k in
                       zip(*np.unique(ops, return_counts=True))}
    assert st_.leaves == st_.ops.get("leaf", 0) == int((levels == 0).sum())
    assert st_.depth == int(levels.max()) + 1 and sum(st_.widths) == n
    assert st_.max_width == max(st_.widths)
    assert sum(st_.width_histogram.values()) == st_.depth
    fan = np.bincount(args[args >= 0], minlength=n)
    assert st_.max_fanout == int(fan.max())
    assert sum(st_.fanout_histogram.values()) == n
    assert 1 <= st_.longest_chain <= n
    assert st_.total_nbytes == tape.nbytes == n * ROW_BYTES == sum(st_.nbytes.values())
    assert st_.bytes_per_node == ROW_BYTES
    assert root.data == float_eval(program, program.leaves)   # it survives compaction


# --------------------------------------------------------------------------------------
# DOT pictures parse back with the right counts
# --------------------------------------------------------------------------------------

def _dot_nodes(graph) -> dict:
    found = {n.get_name(): n for n in graph.get_nodes()
             if n.get_name() not in ("node", "edge", "graph")}
    for sub in graph.get_subgraphs():
        found.update(_dot_nodes(sub))
    return found


def _dot_edges(graph) -> list:
    found = [(e.get_source(), e.get_destination()) for e in graph.get_edges()]
    for sub in graph.get_subgraphs():
        found += _dot_edges(sub)
    return found


@SLOW
@given(programs(max_steps=6), labels, st.sampled_from([None, "levels", "chains", "trees"]))
def test_dot_export_parses_back_with_one_node_per_row(tmp_path_factory, program, label,
                                                      collapse):
    viz = pytest.importorskip("tapegrad.viz")
    pydot = pytest.importorskip("pydot")
    if not (hasattr(viz, "render_dot") and hasattr(viz, "export_dot")):
        pytest.skip("tapegrad.viz has no render_dot/export_dot")
    tape, xs, root, nodes = record(program)
    xs[0].label = label
    root.backward()
    args = tape.args
    drawn_rows = ancestors(tape, root.row)
    non_leaf = [r for r in drawn_rows if tape.levels[r] > 0]
    # micrograd's picture: a record per row drawn, an op node per non-leaf row
    graph = pydot.graph_from_dot_data(viz.render_dot(root, max_nodes=10_000,
                                                     collapse=collapse))[0]
    drawn = _dot_nodes(graph)
    if collapse is None:
        assert {k for k in drawn if k.startswith("v")} == {f"v{r}" for r in drawn_rows}
        assert {k for k in drawn if k.startswith("o")} == {f"o{r}" for r in non_leaf}
        pairs = {(int(a), r) for r in non_leaf for a in args[r] if a >= 0}
        assert len(_dot_edges(graph)) == len(non_leaf) + len(pairs)
    else:                                # collapsed nodes carry the rows they stand for
        rows = sum(int(n.get_attributes().get("rows", "1").strip('"'))
                   for k, n in drawn.items() if not k.startswith("o"))
        assert rows == len(drawn_rows)
    # the streamed export: a node per row, an edge per operand slot
    path = tmp_path_factory.mktemp("dot") / "tape.dot"
    assert viz.export_dot(tape, path) == len(tape)
    exported = pydot.graph_from_dot_data(path.read_text(encoding="utf-8"))[0]
    assert set(_dot_nodes(exported)) == {f"r{r}" for r in range(len(tape))}
    assert len(_dot_edges(exported)) == int((args >= 0).sum())
