"""Record once, replay many: Tape.forward(), compiled backward, Function, guards."""

import math
import random

import numpy as np
import pytest

from tapegrad import Function, GuardError, Tape, Value, detect_anomaly
from tapegrad.nn import MLP

STEP = {   # (a, b, c, picked): two nodes, a constant, a few more nodes
    "relu": lambda a, b, c, m: a.relu(), "tanh": lambda a, b, c, m: a.tanh(),
    "sigmoid": lambda a, b, c, m: a.sigmoid(), "exp_small": lambda a, b, c, m: (a * 0.1).exp(),
    "log_pos": lambda a, b, c, m: (a * a + 1.0).log(),
    "sqrt_pos": lambda a, b, c, m: (a * a + 0.5).sqrt(), "abs": lambda a, b, c, m: abs(a),
    "sin": lambda a, b, c, m: a.sin(), "cos": lambda a, b, c, m: a.cos(),
    "neg": lambda a, b, c, m: -a, "add": lambda a, b, c, m: a + b,
    "sub": lambda a, b, c, m: a - b, "mul": lambda a, b, c, m: a * b,
    "div": lambda a, b, c, m: a / (b * b + 1.0),
    "pow_pos": lambda a, b, c, m: (a * a + 0.5) ** b.sigmoid(),
    "addc": lambda a, b, c, m: a + c, "mulc": lambda a, b, c, m: a * c,
    "rsub": lambda a, b, c, m: c - a, "rdiv": lambda a, b, c, m: c / (a * a + 1.0),
    "powc": lambda a, b, c, m: (a * a + 0.1) ** c,
    "sum": lambda a, b, c, m: sum(m),                                  # folded sum chains
    "prod": lambda a, b, c, m: math.prod((v * 0.5).tanh() + 1.0 for v in m),
}


def program(rng: random.Random, n_leaves: int, n_ops: int) -> list:
    steps = []
    for k in range(n_ops):
        n = n_leaves + k
        kind = rng.choice(sorted(STEP))
        steps.append((kind, rng.randrange(n), rng.randrange(n), rng.uniform(0.5, 1.5),
                      [rng.randrange(n) for _ in range(rng.randint(3, 12))]))
    return steps


def run(leaves: list[Value], steps: list) -> Value:
    nodes = list(leaves)
    for kind, i, j, c, many in steps:
        out = STEP[kind](nodes[i], nodes[j], c, [nodes[k] for k in many])
        nodes.append((out * 0.3).tanh())         # bounded, and no branch on the data
    root = nodes[-1]
    for v in nodes[-6:-1]:
        root = root + v
    return root


@pytest.mark.parametrize("seed", range(8))
def test_replay_equals_rerecording(seed):
    rng = random.Random(seed)
    start = [rng.uniform(-1, 1) for _ in range(6)]
    steps = program(rng, 6, 80)
    with Tape() as t:
        leaves = [Value(x) for x in start]
        root = run(leaves, steps)
    for _ in range(3):
        new = [rng.uniform(-1, 1) for _ in range(6)]
        for v, x in zip(leaves, new):
            v.data = x
            v.grad = 0.0
        t.forward()
        root.backward()
        with Tape() as fresh:
            ref_leaves = [Value(x) for x in new]
            ref = run(ref_leaves, steps)
            ref.backward()
        assert len(fresh) == len(t)
        np.testing.assert_allclose(t.values, fresh.values, rtol=1e-12, atol=1e-14)
        got = np.array([v.grad for v in leaves])
        want = np.array([v.grad for v in ref_leaves])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_replay_reads_leaves_of_other_tapes_and_updates_their_grads():
    random.seed(3)
    model = MLP(2, [4, 1])                          # parameters on the default tape
    xs = [[0.5, -1.0], [1.5, 0.25]]
    with Tape("step") as t:
        inputs = [[Value(a), Value(b)] for a, b in xs]
        loss = sum((model(x) - 1.0) ** 2 for x in inputs)
    for _ in range(3):
        for p in model.parameters():
            p.data -= 0.05
        model.zero_grad()
        t.forward()
        loss.backward()
        with Tape():                                 # the same step, recorded afresh
            ref = sum((model([Value(a), Value(b)]) - 1.0) ** 2 for a, b in xs)
            grads = []
            for p in model.parameters():
                grads.append(p.grad)
                p.grad = 0.0
            ref.backward()
        assert loss.data == pytest.approx(ref.data, rel=1e-12)
        assert grads == pytest.approx([p.grad for p in model.parameters()], rel=1e-12)


def test_moons_style_training_by_replay_matches_eager_losses():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    y = np.where(X[:, 0] * X[:, 1] > 0, 1, -1)

    def loss(model):
        scores = [model(list(map(Value, row))) for row in X]
        losses = [(1 + -yi * s).relu() for yi, s in zip(y, scores)]
        return sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())

    random.seed(5)
    eager_model = MLP(2, [8, 8, 1])
    eager = []
    for k in range(8):
        total = loss(eager_model)
        eager_model.zero_grad()
        total.backward()
        eager.append(total.data)
        for p in eager_model.parameters():
            p.data -= (1.0 - 0.9 * k / 100) * p.grad
    random.seed(5)
    model = MLP(2, [8, 8, 1])
    with Tape() as t:
        total = loss(model)
    replayed = []
    for k in range(8):
        if k:
            t.forward()
        model.zero_grad()
        total.backward()
        replayed.append(total.data)
        for p in model.parameters():
            p.data -= (1.0 - 0.9 * k / 100) * p.grad
    assert replayed == pytest.approx(eager, rel=1e-12)


def test_folded_sums_and_products_are_bit_identical_to_recording():
    rng = random.Random(1)
    with Tape() as t:
        xs = [Value(rng.uniform(-2, 2)) for _ in range(200)]
        s = sum(xs)
        p = math.prod(x * 0.1 + 1.0 for x in xs)
        d = xs[0] - xs[1] - xs[2] - xs[3] + xs[4]
    before = t.values.copy()
    t.forward()
    assert np.array_equal(t.values, before)        # same leaves: exactly the same values
    assert s.data == math.fsum([0.0]) + sum(x.data for x in xs)
    assert d.data == (((xs[0].data - xs[1].data) - xs[2].data) - xs[3].data) + xs[4].data
    del p


# --------------------------------------------------------------------------------------
# Function
# --------------------------------------------------------------------------------------


def model_function():
    random.seed(11)
    model = MLP(2, [6, 6, 1])
    with Tape() as t:
        x = [Value(0.0), Value(0.0)]
        score = model(x)
        unrelated = (score * 0.0 + Value(-1.0)).log()     # not needed by the output
    return model, t, x, score, unrelated


def test_function_matches_separate_evaluations():
    model, t, x, score, _ = model_function()
    f = Function(inputs=x, outputs=score)
    X = np.random.default_rng(2).normal(size=(37, 2))
    out = f(X)
    assert out.shape == (37, 1)
    ref = np.array([model([Value(a), Value(b)]).data for a, b in X])
    np.testing.assert_allclose(out[:, 0], ref, rtol=1e-12, atol=1e-14)
    single = f(X[3])
    assert single.shape == (1,) and single[0] == pytest.approx(ref[3], rel=1e-12)


def test_function_value_and_grad_per_sample():
    model, t, x, score, _ = model_function()
    f = Function(inputs=x, outputs=score)
    X = np.random.default_rng(3).normal(size=(9, 2))
    values, grads = f.value_and_grad(X)
    assert values.shape == (9,) and grads.shape == (9, 2)
    for k in range(9):
        with Tape():
            xa = [Value(X[k, 0]), Value(X[k, 1])]
            s = model(xa)
            s.backward()
        assert values[k] == pytest.approx(s.data, rel=1e-12)
        assert grads[k] == pytest.approx([xa[0].grad, xa[1].grad], rel=1e-10, abs=1e-14)
    v, g = f.value_and_grad(X[0])
    assert isinstance(v, float) and g.shape == (2,)


def test_function_prunes_rows_the_outputs_do_not_need():
    model, t, x, score, unrelated = model_function()
    f = Function(inputs=x, outputs=score)
    f(np.zeros(2))
    covered = set(f.rows.tolist())
    assert unrelated.row not in covered and score.row in covered
    assert len(covered) < len(t)


def test_function_takes_other_leaves_at_their_current_values_or_as_inputs():
    model, t, x, score, _ = model_function()
    f = Function(inputs=x, outputs=score)
    before = f(np.array([0.3, 0.4]))[0]
    b = model.layers[-1].neurons[0].b
    b.data += 1.0                                    # a parameter changes: constant moves
    assert f(np.array([0.3, 0.4]))[0] == pytest.approx(before + 1.0, rel=1e-12)
    g = Function(inputs=x + [b], outputs=score)
    assert g([0.3, 0.4, b.data])[0] == pytest.approx(before + 1.0, rel=1e-12)
    _, grads = g.value_and_grad(np.array([[0.3, 0.4, 5.0]]))
    assert grads[0, 2] == pytest.approx(1.0)        # d score / d bias of a linear output


def test_function_after_the_tape_compacts():
    with Tape() as t:
        junk = [Value(float(k)) * 2 for k in range(50)]
        a = Value(1.0)
        out = (a * 3.0).tanh()
    f = Function(inputs=[a], outputs=out)
    first = f([0.2])
    del junk
    t.compact()
    assert f([0.2]) == pytest.approx(first) and first[0] == pytest.approx(math.tanh(0.6))


def test_function_errors():
    model, t, x, score, _ = model_function()
    f = Function(inputs=x, outputs=score)
    with pytest.raises(ValueError, match=r"expected shape \(2,\) or \(B, 2\).*\(3,\)"):
        f(np.zeros(3))
    with pytest.raises(ValueError, match=r"got \(2, 2, 2\)"):
        f(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="inputs must be real numbers, got dtype complex"):
        f(np.zeros(2, complex))
    with pytest.raises(ValueError, match="inputs must be real numbers"):
        f(["a", "b"])
    with pytest.raises(ValueError, match="needs a Function with one output, this one has 2"):
        Function(inputs=x, outputs=[score, score * 2]).value_and_grad(np.zeros(2))
    with pytest.raises(ValueError, match=r"inputs\[0\] is not a leaf"):
        Function(inputs=[score], outputs=score)
    with pytest.raises(TypeError, match=r"outputs\[0\] must be a Value"):
        Function(inputs=x, outputs=[1.0])
    with pytest.raises(TypeError, match="inputs must be a list or tuple of Values"):
        Function(inputs=x[0], outputs=score)
    with pytest.raises(ValueError, match="inputs must not repeat a Value"):
        Function(inputs=[x[0], x[0]], outputs=score)
    stranger = Value(1.0)
    with pytest.raises(ValueError, match=r"inputs\[0\] is not used on tape"):
        Function(inputs=[stranger], outputs=score)
    with Tape("other"):
        elsewhere = Value(1.0) * 2
    with pytest.raises(ValueError, match="all outputs must be on one tape"):
        Function(inputs=x, outputs=[score, elsewhere])


# --------------------------------------------------------------------------------------
# guards
# --------------------------------------------------------------------------------------


def branchy(x: Value) -> Value:
    if x > 0:
        return x * 2
    return -x


def test_replay_raises_when_a_recorded_comparison_flips():
    with Tape() as t:
        x = Value(1.0, label="x")
        y = branchy(x)
    x.data = 3.0
    t.forward()                                    # same branch: fine
    assert y.data == 6.0
    x.data = -1.0
    with pytest.raises(GuardError, match=r"replay diverged at row 1 \(gt: x > y\): "
                                         r"recorded True, now False"):
        t.forward()


def test_guard_error_names_the_label_and_the_sample_in_a_batch():
    with Tape() as t:
        x = Value(1.0)
        h = x * 1.0
        ok = h >= 0.0                                # the outputs do not read h
        y = x * 3 if ok else x
    t.value(h.row + 1).label = "h >= 0"
    f = Function(inputs=[x], outputs=y)
    assert f([[1.0], [2.0]]).tolist() == [[3.0], [6.0]]
    with pytest.raises(GuardError, match=r"row 2 'h >= 0' .*now False for sample 1"):
        f([[1.0], [-2.0]])


def test_long_recurrences_replay_row_by_row_exactly():
    def recur(x, w, b, steps):
        for _ in range(steps):
            x = (x * w + b).tanh()
        return x

    with Tape() as t:
        w, b, x0 = Value(0.9), Value(0.1), Value(0.5)
        out = recur(x0, w, b, 400)
    recorded = t.values.copy()
    t.forward()
    assert t.values.tobytes() == recorded.tobytes()       # same scalar rules as recording
    kinds = {type(step).__name__ for step in t.rows_object().plan(("forward", len(t))).steps}
    assert "_SequentialStep" in kinds
    w.data = 0.7
    t.forward()
    out.backward()
    with Tape():
        w2, b2, x2 = Value(0.7), Value(0.1), Value(0.5)
        ref = recur(x2, w2, b2, 400)
        ref.backward()
    assert out.data == ref.data and w.grad == pytest.approx(w2.grad, rel=1e-12)
    f = Function(inputs=[w, b], outputs=out)
    batch = f([[0.7, 0.1], [0.9, 0.1]])
    assert batch[0, 0] == pytest.approx(ref.data, rel=1e-14)


def test_function_ignores_guards_its_inputs_cannot_flip():
    """An old comparison elsewhere on the tape does not break a Function (issue 11, 5)."""
    with Tape():
        p = Value(2.0)
        best = 1.0
        if p > best:                            # depends on no input of f
            best = p.data
        x = Value(1.0)
        y = x * 3
    f = Function([x], [y])
    p.data = -5.0                               # the old branch would now go the other way
    assert f([1.0]).tolist() == [3.0]
    assert f([[2.0], [-4.0]]).tolist() == [[6.0], [-12.0]]


def test_a_guard_on_an_input_is_still_checked():
    with Tape():
        x = Value(1.0)
        y = x * 2 if x > 0 else x * 3
    f = Function([x], [y])
    assert f([4.0]).tolist() == [8.0]
    with pytest.raises(GuardError, match=r"recorded True, now False for sample 1"):
        f([[1.0], [-1.0]])


def test_value_and_grad_ignores_rows_that_only_feed_a_guard():
    """A nan partial of a row that only feeds a comparison does not reach the gradient
    (issue 11, item 3): eager backward gives 0, and so does the Function."""
    with Tape():
        x, w = Value(-1.0), Value(2.0)
        _ = x.sqrt() < 1.0
        y = w * 3
        y.backward()
        assert (x.grad, w.grad) == (0.0, 3.0)
    f = Function([x, w], [y])
    value, grad = f.value_and_grad([-1.0, 2.0])
    assert value == 6.0 and grad.tolist() == [0.0, 3.0]


def test_value_and_grad_raises_under_detect_anomaly():
    """Like backward(), value_and_grad raises on an inf gradient (issue 11, item 4)."""
    with Tape():
        x = Value(1.0)
        y = x.sqrt()
    f = Function([x], [y])
    assert f.value_and_grad([0.0])[1].tolist() == [math.inf]
    with detect_anomaly(), pytest.raises(
            FloatingPointError, match=r"detect_anomaly: backward through sqrt at row 1 "
                                      r"of tape .*: its gradient 1\.0 times its local partial "
                                      r"inf with respect to operand 0"):
        f.value_and_grad([0.0])


def test_forward_of_an_empty_tape_does_nothing():
    """Tape().forward() on a new or reset tape returns quietly (issue 11, item 6)."""
    t = Tape()
    t.forward()
    with t:
        Value(1.0) * 2
    t.reset()
    t.forward()
    assert len(t) == 0


def test_function_reads_linked_leaves_that_are_not_inputs():
    """Mirrors of other tapes' leaves: non-inputs follow their leaf's current .data on
    every call (no refresh of the whole tape's links), inputs come from the batch."""
    import tapegrad
    with tapegrad.Tape("home"):
        w = tapegrad.Value(2.0)
        b = tapegrad.Value(0.5)
    with tapegrad.Tape("use"):
        x = tapegrad.Value(1.0)
        out = w * x + b
    f = tapegrad.Function(inputs=[x, b], outputs=out)
    assert f([3.0, 1.0])[0] == 7.0
    w.data = -1.0
    b.data = 100.0                       # an input: the batch wins
    assert f([3.0, 1.0])[0] == -2.0
    value, grad = f.value_and_grad([3.0, 1.0])
    assert value == -2.0 and grad.tolist() == [-1.0, 1.0]


def _reference_adjoints(back, values: np.ndarray) -> np.ndarray:
    """The sweep before the one-gather partials and paired scatters: each op's own
    partial rule, then per level group one ``np.add.at`` per operand slot."""
    from tapegrad.ops import OPS
    plan, order, m = back.plan, back.order, back.order.size
    part = np.zeros((2 * m,) + values.shape[1:])
    with np.errstate(all="ignore"):
        for rule, at in back.by_op():
            d0, d1 = rule.partials(values[back.t0[at]], values[back.t1[at]], values[order[at]])
            part[at] = d0
            if rule.arity == 2:
                part[m + at] = d1
        adj = np.zeros(values.shape)
        adj[back.output] = 1.0
        assert not back.chains                    # too short to fold: groups only
        for k in back.keys:
            a, b = back.groups[k]
            g = adj[order[a:b]]
            np.add.at(adj, back.t0[a:b], part[a:b] * g)
            np.add.at(adj, back.t1[a:b], part[m + a: m + b] * g)
    assert {OPS[int(c)].name for c in plan.op[order]} >= {"mul", "add", "sub", "neg", "relu"}
    return adj


@pytest.mark.usefixtures("numpy_kernels")
def test_backward_fast_paths_match_a_plain_np_add_at_sweep():
    """Groups whose targets repeat (x * x, x shared in one level) and groups with unique
    targets, unary ops (slot 1 unused), products with a constant: the adjoints of every
    row are bit-identical to the plain sweep, for one sample and for a batch."""
    with Tape():
        x, y, z = Value(1.5), Value(-0.75), Value(2.25)
        a, b, c = x * x, x * y, z * 3.0               # level 1: x repeats, a constant
        d, e = a + b, (c - y).relu()                  # level 2: unique targets, unary
        root = (d * e) + (-x) + z * z
    f = Function(inputs=[x, y, z], outputs=root)
    v, g = f.value_and_grad(np.array([1.5, -0.75, 2.25]))
    # d/dx = (2x + y) e - 1, d/dy = x e - (a + b), d/dz = 3 (a + b) + 2 z, e = 3z - y
    e = 3 * 2.25 + 0.75
    assert v == pytest.approx((1.5 * 1.5 - 1.5 * 0.75) * e - 1.5 + 2.25 ** 2)
    assert g == pytest.approx([(3.0 - 0.75) * e - 1.0, 1.5 * e - (2.25 - 1.125),
                               3 * (2.25 - 1.125) + 4.5], rel=1e-15)
    back = f._backward
    assert {s for *_, s in back._sweep.values()} >= {0, 2}   # a slot dropped, slots paired
    for theta in (np.array([1.5, -0.75, 2.25]), np.array([[0.5, 2.0, -1.0], [1.0, 1.0, 1.0]])):
        values = f._values(np.atleast_2d(theta))
        f._run(values)
        adj = back.run(values)
        ref = _reference_adjoints(back, values)
        rows = back.plan.rows.size                # constants' adjoints are not kept
        assert values.shape == adj.shape and np.array_equal(adj[:rows], ref[:rows])
        assert np.array_equal(adj[f._in_local], ref[f._in_local])


@pytest.mark.usefixtures("numpy_kernels")
def test_backward_without_chain_rows_gives_the_same_leaf_adjoints():
    """Function gradients skip writing the adjoints of rows inside folded chains: the
    leaves' adjoints are bit-identical, the chain rows' stay 0."""
    with Tape():
        x, w = Value(0.5), Value(1.25)
        s = x
        for _ in range(20):                            # a folded single-reader chain
            s = (s * w).tanh() + x
    f = Function(inputs=[x, w], outputs=s)
    f.value_and_grad(np.array([0.5, 1.25]))
    back = f._backward
    assert back.chains
    values = f._values(np.array([[0.5, 1.25]]))
    f._run(values)
    full, leaves_only = back.run(values), back.run(values, chain_rows=False)
    assert np.array_equal(full[f._in_local], leaves_only[f._in_local])
    inner = np.concatenate([ch.rows.ravel()[1:] for chs in back.chains.values() for ch in chs])
    assert np.all(full[inner] != 0.0) and np.all(leaves_only[inner] == 0.0)
    assert np.array_equal(f.value_and_grad(np.array([0.5, 1.25]))[1], full[f._in_local])
