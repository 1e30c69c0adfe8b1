"""The Value facade: micrograd's API and numbers, gradients, semantics and errors."""

import math
import random
import threading

import numpy as np
import pytest
from micrograd.engine import Value as MValue

from tapegrad import ResetTapeError, Tape, Value

# --------------------------------------------------------------------------------------
# micrograd's published checks
# --------------------------------------------------------------------------------------


def test_micrograd_readme_expression():
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    assert g.data == pytest.approx(24.70408163265306, rel=1e-15)
    assert a.grad == pytest.approx(138.83381924198252, rel=1e-15)
    assert b.grad == pytest.approx(645.5772594752186, rel=1e-15)


def test_micrograd_sanity_check():
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    assert y.data == -20.0
    assert x.grad == 46.0


# --------------------------------------------------------------------------------------
# random expression graphs, compared with micrograd itself
# --------------------------------------------------------------------------------------

STEP = {
    "add": lambda a, b, c: a + b, "sub": lambda a, b, c: a - b, "mul": lambda a, b, c: a * b,
    "div": lambda a, b, c: a / (b * b + 1.0), "pow": lambda a, b, c: (a * a + 0.5) ** c,
    "relu": lambda a, b, c: a.relu(), "neg": lambda a, b, c: -a, "radd": lambda a, b, c: c + a,
    "rsub": lambda a, b, c: c - a, "rmul": lambda a, b, c: c * a,
    "rdiv": lambda a, b, c: c / (a * a + 1.0), "addc": lambda a, b, c: a + c,
    "mulc": lambda a, b, c: a * c,
}


def random_program(rng: random.Random, n_leaves: int, n_ops: int):
    """A list of steps; each step combines earlier nodes with micrograd's operators."""
    steps = []
    for k in range(n_ops):
        n = n_leaves + k
        kind = rng.choice(sorted(STEP))
        steps.append((kind, rng.randrange(n), rng.randrange(n), rng.uniform(0.5, 1.5)))
    return steps


def run_program(cls, leaves, steps):
    nodes = [cls(x) for x in leaves]
    for kind, i, j, c in steps:
        out = STEP[kind](nodes[i], nodes[j], c)
        # keep magnitudes moderate so the comparison is about the engine, not overflow
        nodes.append(out * 0.5 if abs(out.data) > 4 else out)
    root = nodes[-1]
    for v in nodes[-8:-1]:
        root = root + v
    root.backward()
    return root, nodes[: len(leaves)]


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_match_micrograd(seed):
    rng = random.Random(seed)
    leaves = [rng.uniform(-2, 2) for _ in range(6)]
    steps = random_program(rng, len(leaves), 60)
    with Tape():
        ours, our_leaves = run_program(Value, leaves, steps)
    theirs, their_leaves = run_program(MValue, leaves, steps)
    # micrograd divides as a * b**-1 and sums gradients in set order: last-bit differences
    assert ours.data == pytest.approx(theirs.data, rel=1e-12, abs=1e-12)
    for mine, ref in zip(our_leaves, their_leaves):
        assert mine.grad == pytest.approx(ref.grad, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------
# the API people use from micrograd
# --------------------------------------------------------------------------------------


def test_data_and_grad_are_writable_python_floats():
    p = Value(2)
    assert type(p.data) is float and p.data == 2.0
    assert type(p.grad) is float and p.grad == 0.0
    (p * 3).backward()
    assert p.grad == 3.0
    p.data -= 0.1 * p.grad          # an optimizer step
    assert p.data == pytest.approx(1.7)
    p.grad = 0                      # zero_grad
    assert p.grad == 0.0


def test_repr_label_pow_alias_and_graph_attributes():
    a = Value(2.0, label="a")
    b = a.pow(3)
    assert repr(a) == "Value(data=2.0, grad=0.0)"
    assert a.label == "a" and b.label == ""
    b.label = "b"
    assert b.label == "b"
    assert b.data == 8.0 and b._op == "**3"
    assert [v.data for v in b._prev] == [2.0]
    c = a * a
    assert len(c._prev) == 1 and c._op == "*"
    d = a + Value(1.0)
    assert sorted(v.data for v in d._prev) == [1.0, 2.0] and d._op == "+"
    assert a._op == "" and a._prev == set()
    assert b.relu()._op == "ReLU"
    with pytest.raises(AttributeError):
        b._op = "+"
    with pytest.raises(TypeError, match="label must be a str"):
        Value(1.0, label=3)


def test_reflected_operators():
    a = Value(4.0)
    assert (2 - a).data == -2.0
    assert (3 / a).data == 0.75
    assert (1 + a).data == 5.0
    assert (2 * a).data == 8.0
    assert (2 ** a).data == 16.0
    assert abs(Value(-3.0)).data == 3.0


def test_numpy_scalars_are_accepted_and_stored_as_float64():
    v = Value(np.float32(0.5)) * np.int64(3) + np.float64(1.0)
    assert v.data == 2.5 and type(v.data) is float
    assert (np.float64(2.0) * Value(3.0)).data == 6.0
    assert (np.int64(2) - Value(1.0)).data == 1.0
    assert Value(np.bool_(True)).data == 1.0
    assert (Value(1.0) + True).data == 2.0


def test_true_division_not_multiplication_by_reciprocal():
    a, b = Value(1.0), Value(3.0)
    assert (a / b).data == 1.0 / 3.0
    assert (a / b).data == np.divide(1.0, 3.0)


# --------------------------------------------------------------------------------------
# backward semantics
# --------------------------------------------------------------------------------------


def test_leaf_grads_accumulate_and_intermediates_hold_the_last_backward():
    x = Value(3.0)
    y = x * x          # intermediate
    z = y * 2.0
    z.backward()
    assert x.grad == 12.0 and y.grad == 2.0 and z.grad == 1.0
    z.backward()
    assert x.grad == 24.0          # leaves accumulate, as in micrograd
    assert y.grad == 2.0           # intermediates hold this backward's gradient
    assert z.grad == 1.0


def test_only_ancestors_get_gradient_and_no_nan_leaks():
    x = Value(0.0)
    a = x * 1.0
    side = a.sqrt()          # not an ancestor of root; its partial at 0 is +inf
    side.grad = 5.0
    root = a * 2.0
    root.backward()
    assert x.grad == 2.0
    assert a.grad == 2.0
    assert side.grad == 5.0  # untouched: not an ancestor


def test_repeated_operands_accumulate():
    a = Value(3.0)
    b = a * a + a * a * a
    b.backward()
    assert a.grad == 2 * 3.0 + 3 * 9.0


def test_backward_on_a_leaf():
    a = Value(5.0)
    a.backward()
    assert a.grad == 1.0


def test_chain_of_a_million_ops_records_and_backpropagates():
    # 500k iterations of x = x * 1.0001 + 1e-4: 10^6 ops, one row each
    with Tape() as t:
        x0 = Value(1.0)
        x = x0
        for _ in range(500_000):
            x = x * 1.0001 + 1e-4
        x.backward()
    assert len(t) == 1_000_001
    assert x0.grad == pytest.approx(1.0001 ** 500_000, rel=1e-9)
    # closed form of the recurrence: x_n = a^n (x0 + b/(a-1)) - b/(a-1)
    a, b, n = 1.0001, 1e-4, 500_000
    assert x.data == pytest.approx(a**n * (1.0 + b / (a - 1)) - b / (a - 1), rel=1e-9)


def test_deep_graph_with_side_branches_matches_a_plain_python_reverse_pass():
    rng = random.Random(7)
    with Tape() as t:
        xs = [Value(rng.uniform(-1, 1)) for _ in range(5)]
        h = xs[0]
        for k in range(3000):
            h = (h * xs[k % 5]).tanh() + xs[(k + 1) % 5] * 0.5
        h.backward()
    # reference: the same recurrence differentiated by hand, step by step
    vals = [v.data for v in xs]
    hs = [vals[0]]
    for k in range(3000):
        hs.append(math.tanh(hs[-1] * vals[k % 5]) + vals[(k + 1) % 5] * 0.5)
    grads = [0.0] * 5
    gh = 1.0
    for k in reversed(range(3000)):
        pre = hs[k] * vals[k % 5]
        dtanh = 1 - math.tanh(pre) ** 2
        grads[(k + 1) % 5] += 0.5 * gh
        grads[k % 5] += gh * dtanh * hs[k]
        gh = gh * dtanh * vals[k % 5]
    grads[0] += gh
    assert [v.grad for v in xs] == pytest.approx(grads, rel=1e-9)
    assert len(t) > 9000


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------

BAD = ["x", None, [1.0], 1 + 2j, np.array(["x", "y"]), {"a": 1}]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: type(b).__name__)
def test_bad_operands_raise_type_errors_that_name_them(bad):
    a = Value(1.0)
    # arrays broadcast element by element: the error names the bad element's type
    name = "str" if isinstance(bad, np.ndarray) else type(bad).__name__
    for expr in (lambda: a + bad, lambda: a * bad, lambda: a - bad, lambda: a / bad,
                 lambda: a ** bad):
        with pytest.raises(TypeError, match=f"expected a Value or a real number, got .*{name}"):
            expr()
    for expr in (lambda: bad - a, lambda: bad / a):
        with pytest.raises(TypeError):
            expr()
    with pytest.raises(TypeError, match=f"Value\\(data\\) must be a real number.*"
                                        f"{type(bad).__name__}"):
        Value(bad)


def test_complex_is_called_out():
    with pytest.raises(TypeError, match="complex numbers are not supported"):
        Value(1.0) + 1j
    with pytest.raises(TypeError, match="complex numbers are not supported"):
        Value(1j)


def test_a_value_is_not_data():
    with pytest.raises(TypeError, match="got a Value"):
        Value(Value(1.0))
    with pytest.raises(TypeError, match="Value.data must be a real number"):
        Value(1.0).data = "3"
    with pytest.raises(TypeError, match="Value.grad must be a real number"):
        Value(1.0).grad = None


def test_huge_int_is_a_value_error():
    with pytest.raises(ValueError, match="does not fit in a float64"):
        Value(10**400)
    with pytest.raises(ValueError, match="does not fit in a float64"):
        Value(1.0) * 10**400


def test_values_of_two_tapes_cannot_be_mixed():
    with Tape("first"):
        a = Value(1.0) * 2
    with Tape("second"):
        b = Value(1.0) * 3
    with pytest.raises(ValueError, match="'first' and 'second'"):
        a + b
    with pytest.raises(ValueError, match="'second' and 'first'"):
        b * a


def test_values_of_a_reset_tape_raise():
    t = Tape("scratch")
    with t:
        a = Value(2.0)
        b = a * 3
    t.reset()
    for use in (lambda: b.data, lambda: b + 1, lambda: b.backward(), lambda: a.grad,
                lambda: Value(1.0) * b, lambda: b.relu()):
        with pytest.raises(ResetTapeError, match="'scratch', which was reset"):
            use()
    with t:                       # the tape itself records again
        c = Value(1.0) + 1
    assert c.data == 2.0 and len(t) == 2


# --------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------


def _work(seed: int) -> list[float]:
    rng = random.Random(seed)
    xs = [Value(rng.uniform(-1, 1)) for _ in range(20)]
    acc = xs[0]
    for k in range(4000):
        acc = acc * 0.999 + xs[k % 20] * xs[(k * 7) % 20]
    acc.backward()
    return [acc.data] + [x.grad for x in xs]


def test_two_threads_record_and_backpropagate_at_once():
    expected = [_work(s) for s in (1, 2)]
    results = {}
    barrier = threading.Barrier(2)

    def run(seed):
        barrier.wait()
        results[seed] = _work(seed)

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results[1] == expected[0]
    assert results[2] == expected[1]
