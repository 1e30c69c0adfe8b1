"""The tape: columns, current tape, leaves shared across tapes, reclaiming the default tape."""

import gc
import random
import threading

import numpy as np
import pytest

from tapegrad import ResetTapeError, Tape, Value, current_tape
from tapegrad import ops as O
from tapegrad._rows import BLOCK_ROWS
from tapegrad.tape import ROW_BYTES


def test_columns_describe_the_rows():
    with Tape() as t:
        a = Value(2.0, label="a")
        b = Value(-3.0)
        c = a * b          # row 2
        d = c + 1.0        # row 3: immediate, one row
        e = d.relu()       # row 4
        f = 2 ** e         # row 5: immediate on the left
    assert len(t) == 6
    assert t.opcodes.tolist() == [0, 0, O.MUL.code, O.ADD.code, O.RELU.code, O.POW.code]
    assert t.args.tolist() == [[-1, -1], [-1, -1], [0, 1], [2, -1], [3, -1], [-1, 4]]
    assert t.consts.tolist() == [0, 0, 0, 1.0, 0, 2.0]
    assert t.values.tolist() == [2.0, -3.0, -6.0, -5.0, 0.0, 1.0]
    assert t.levels.tolist() == [0, 0, 1, 2, 3, 4]
    assert t.label(0) == "a" and t.label(2) == ""
    f.backward()
    assert t.grads.tolist()[5] == 1.0
    assert t.grads[0] == a.grad and t.grads[1] == b.grad
    assert t.opcodes.dtype == np.int8 and t.args.dtype == np.int32
    assert t.values.dtype == np.float64 and t.levels.dtype == np.int32


def test_views_are_read_only_and_cover_the_live_rows():
    with Tape() as t:
        x = Value(1.0)
        for _ in range(10):
            x = x + 1
    for view in (t.opcodes, t.args, t.consts, t.values, t.grads, t.levels):
        assert view.shape[0] == 11
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 1
    assert x.data == 11.0


def test_levels_are_one_more_than_the_deepest_operand():
    with Tape() as t:
        a, b = Value(1.0), Value(2.0)
        c = a * b
        d = c * c
        e = d + a
        f = e + c
    assert t.levels[[c.row, d.row, e.row, f.row]].tolist() == [1, 2, 3, 4]


def test_nbytes_counts_rows_and_stays_under_48_per_row():
    assert ROW_BYTES <= 48
    with Tape() as t:
        x = Value(1.0)
        for _ in range(50_000):
            x = x * 1.0
    assert t.nbytes == len(t) * ROW_BYTES


def test_current_tape_and_nesting():
    default = current_tape()
    assert default.name == "default"
    with Tape("outer") as outer:
        assert current_tape() is outer
        with Tape("inner") as inner:
            assert current_tape() is inner
            v = Value(1.0) + 1
        assert current_tape() is outer
    assert current_tape() is default
    assert v.tape is inner


def test_exiting_out_of_order_is_an_error():
    a, b = Tape("a"), Tape("b")
    a.__enter__()
    b.__enter__()
    with pytest.raises(RuntimeError, match="'a' exited out of order"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)


def test_each_thread_has_its_own_default_tape():
    seen = {}

    def run():
        seen["tape"] = current_tape()
        seen["value"] = (Value(2.0) * 3).data

    th = threading.Thread(target=run, name="worker")
    th.start()
    th.join()
    assert seen["tape"] is not current_tape()
    assert seen["tape"].name == "default[worker]"
    assert seen["value"] == 6.0


def test_bad_tape_arguments():
    with pytest.raises(TypeError, match="Tape name must be a str"):
        Tape(3)
    with pytest.raises(ValueError, match="reclaim_min_rows must be a positive int"):
        Tape(reclaim_min_rows=0)


# --------------------------------------------------------------------------------------
# leaves shared across tapes
# --------------------------------------------------------------------------------------


def test_a_leaf_made_outside_is_linked_into_the_tape_it_is_used_on():
    w = Value(3.0)                      # e.g. a model parameter, on the default tape
    with Tape("step") as t:
        x = Value(2.0)
        y = w * x + w
    y.backward()
    assert w.grad == 3.0 and x.grad == 3.0
    assert len(t) == 4                  # x, the link to w, mul, add
    w.data = 10.0                       # an optimizer step on the leaf
    with t:
        z = w * 1.0                     # the link mirrors the leaf's current data
    assert z.data == 10.0
    w.grad = 0.0
    z.backward()
    assert w.grad == 1.0


def test_two_leaves_of_the_default_tape_combine_on_the_current_tape():
    a, b = Value(2.0), Value(5.0)
    with Tape("inside") as t:
        c = a * b
        d = c + a * a
    assert c.tape is t and d.tape is t
    d.backward()
    assert a.grad == 5.0 + 4.0 and b.grad == 2.0


def test_a_leaf_of_another_tape_joins_a_non_leaf_on_its_tape():
    with Tape("one"):
        a = Value(2.0)
        b = a * 3.0
    c = Value(4.0)                      # default tape
    with Tape("two"):
        d = b * c                       # records on "one", where b lives
    assert d.tape is b.tape
    d.backward()
    assert c.grad == 6.0 and a.grad == 12.0


def test_compact_keeps_live_values_working():
    # a live Value keeps the block of BLOCK_ROWS rows it was recorded in: keep one graph
    # in 100 (400 rows apart), so that most blocks hold nothing alive
    with Tape("compacting") as t:
        w = Value(0.5)
        kept = []
        for k in range(500):
            x = Value(float(k))
            y = (w * x + 1.0).tanh()
            if k % 100 == 0:
                kept.append((k, y))
        rows_before = len(t)
        freed = t.compact()
    assert len(t) == rows_before - freed
    assert len(t) <= (len(kept) + 2) * BLOCK_ROWS      # the blocks of w, the ys, the last
    for k, y in kept:
        assert y.data == pytest.approx(np.tanh(0.5 * k + 1.0))
        w.grad = 0.0
        y.backward()
        assert w.grad == pytest.approx((1 - np.tanh(0.5 * k + 1.0) ** 2) * k)
    with t:
        z = kept[-1][1] * 2
    assert z.data == pytest.approx(2 * np.tanh(0.5 * 400 + 1.0))


def test_reclaiming_tape_stays_bounded_in_a_training_loop():
    rng = random.Random(0)
    tape = Tape("loop", reclaim=True, reclaim_min_rows=20_000)
    with tape:
        params = [Value(rng.uniform(-1, 1)) for _ in range(20)]
        data = [[rng.uniform(-1, 1) for _ in range(20)] for _ in range(30)]
        sizes = []
        first_loss = None
        for _ in range(300):
            loss = sum((sum(p * x for p, x in zip(params, row)) - 1.0) ** 2 for row in data)
            if first_loss is None:
                first_loss = loss
            for p in params:
                p.grad = 0.0
            loss.backward()
            for p in params:
                p.data -= 1e-4 * p.grad
            sizes.append(len(tape))
    assert max(sizes) <= 2 * 20_000 + 1300     # bounded: never far past the threshold
    assert min(sizes[50:]) < 10_000            # and it really compacted
    assert first_loss.data > loss.data        # a Value kept from step 0 still reads its data
    first_loss.backward()                      # ... and still back-propagates


def test_compaction_triggered_by_a_new_leaf():
    tape = Tape("leaves", reclaim=True, reclaim_min_rows=1000)
    with tape:
        keep = Value(1.0) * 2
        for _ in range(5000):                       # only leaves: Value() triggers the reclaim
            Value(0.5)
        assert len(tape) < 2100
    assert keep.data == 2.0


def test_reset_frees_rows():
    t = Tape()
    with t:
        x = Value(1.0)
        for _ in range(20_000):
            x = x + 1.0
    assert t.nbytes >= 20_000 * ROW_BYTES
    t.reset()
    assert len(t) == 0 and t.nbytes == 0
    with pytest.raises(ResetTapeError):
        x.backward()
    del x
    gc.collect()


# --------------------------------------------------------------------------------------
# name scopes and public handles
# --------------------------------------------------------------------------------------


def test_scopes_mark_rows_with_nested_paths():
    from tapegrad import scope

    with Tape("scoped") as t:
        a = Value(1.0)
        with scope("layer1"):
            b = a * 2
            with scope("neuron0"):
                c = b + 1
            d = c * c
        e = d - 1
    assert t.scope_names == ("", "layer1", "layer1/neuron0")
    assert t.scope_ids.tolist() == [0, 1, 2, 1, 0]
    assert [t.scope_of(v.row) for v in (a, b, c, d, e)] == [
        "", "layer1", "layer1/neuron0", "layer1", ""]
    with pytest.raises(IndexError, match="row 9 is not on tape 'scoped'"):
        t.scope_of(9)
    with pytest.raises(TypeError, match="scope name must be a non-empty str"):
        scope("")


def test_scopes_survive_compaction():
    from tapegrad import scope

    with Tape() as t:
        junk = [Value(float(k)) * 2 for k in range(100)]
        with scope("kept"):
            x = Value(3.0)
            y = x * x
        del junk
        t.compact()
    assert t.scope_of(y.row) == "kept" and t.scope_of(x.row) == "kept"
    assert y.data == 9.0


def test_value_exposes_its_tape_and_row():
    t = Tape("handles")
    with t:
        v = Value(2.0) * 3
    assert v.tape is t and v.row == 1
    del t
    gc.collect()
    handle = v.tape                     # a new handle on the same rows
    assert handle.name == "handles" and len(handle) == 2 and handle.values[1] == 6.0
