"""Saving and loading tapes; anomaly detection in recording, replay and backward."""

import math
import zipfile

import numpy as np
import pytest

from tapegrad import Function, Tape, Value, detect_anomaly, scope


def sample_tape() -> tuple[Tape, Value]:
    with Tape("sample") as t:
        a = Value(2.0, label="a")
        b = Value(-0.5)
        with scope("block"):
            c = a * 3 + b
            with scope("inner"):
                d = c.tanh() * a - 1.0 / b
        e = (d ** 2).relu() + abs(b) + (c > 0.0)
        e.backward()
    return t, e


COLUMNS = ("opcodes", "args", "consts", "values", "grads", "levels", "scope_ids")


def test_save_load_round_trip_is_bit_exact(tmp_path):
    t, e = sample_tape()
    path = tmp_path / "tape.npz"
    t.save(path)
    u = Tape.load(path)
    assert u.name == "sample" and len(u) == len(t)
    for name in COLUMNS:
        x, y = getattr(t, name), getattr(u, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert u.labels == t.labels and u.scope_names == t.scope_names
    assert u.dump(100) == t.dump(100)
    root = u.value(e.row)                  # the loaded tape works like the original
    a = u.value(0)
    a.grad = 0.0
    root.backward()
    ea = t.value(0)
    assert a.grad == ea.grad
    u.forward()
    assert u.values.tobytes() == t.values.tobytes()


def test_load_can_rename_and_values_check_rows(tmp_path):
    t, _ = sample_tape()
    t.save(tmp_path / "t.npz")
    u = Tape.load(tmp_path / "t.npz", name="copy")
    assert u.name == "copy"
    with pytest.raises(IndexError, match="row 99 is not on tape 'copy'"):
        u.value(99)
    with pytest.raises(TypeError, match="row must be an int"):
        u.value("0")


def rewrite(path, **changes):
    """Write a copy of a tape file with some arrays replaced (or removed with None)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    out = path.with_name(f"changed-{'-'.join(changes)}.npz")
    np.savez(out, **arrays)
    return out


def test_bad_files_raise_value_errors(tmp_path):
    t, _ = sample_tape()
    good = tmp_path / "good.npz"
    t.save(good)
    n = len(t)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all" * 10)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.arange(3))
    pickled = tmp_path / "pickled.npz"
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["label_text"] = np.array([{"evil": 1}], dtype=object)   # would need a pickle
    np.savez(pickled, **arrays)
    cases = [
        (truncated, "not a readable tapegrad tape file"),
        (garbage, "not a readable tapegrad tape file"),
        (foreign, "missing"),
        (pickled, "not a readable tapegrad tape file"),
        (rewrite(good, format=np.array("something-else")), "not a tapegrad tape file"),
        (rewrite(good, version=np.array(99)), "format version 99; this tapegrad reads version 1"),
        (rewrite(good, opnames=np.array(["leaf", "add", "warp"] + ["x"] * 17)), "ops this"),
        (rewrite(good, value=np.zeros(n - 1)), "column 'value' has"),
        (rewrite(good, args=np.full((n, 2), n + 5, np.int32)), "not before it"),
        (rewrite(good, level=np.zeros(n, np.int32)), "levels do not match"),
        (rewrite(good, label_rows=np.array([n + 3])), "labels refer to rows outside"),
        (rewrite(good, mark_rows=np.array([0, 0]), mark_ids=np.array([0, 1])), "scope marks"),
        (rewrite(good, grad=np.zeros(n, complex)), "array 'grad' has dtype complex128"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            Tape.load(path)
    with pytest.raises(FileNotFoundError):
        Tape.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(good)


# --------------------------------------------------------------------------------------
# anomaly detection
# --------------------------------------------------------------------------------------


def test_anomaly_in_recording_names_op_row_scope_and_operands():
    with Tape("rec") as t:
        x = Value(1e308)
        with detect_anomaly(), scope("layer1"):
            fine = x * 1.0
            with pytest.raises(FloatingPointError, match=r"mul produced inf while recording "
                               r"row 2 of tape 'rec' \[layer1\]; operands x = 1e\+308, y = 10"):
                x * 10
            with pytest.raises(FloatingPointError, match="log produced -inf"):
                Value(0.0).log()
    assert fine.data == 1e308 and len(t) == 3
    assert math.isinf((x * 10).data)            # outside the block: IEEE as usual


def test_anomaly_in_replay_and_function():
    with Tape() as t:
        x = Value(1.0, label="x")
        y = (x * 2).log()
        y.label = "log2x"
        z = y * 3
    f = Function(inputs=[x], outputs=z)
    x.data = -1.0
    t.forward()                                  # no check: nan flows as in IEEE
    assert math.isnan(z.data)
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"log produced nan at row 2 'log2x' during "
                                                     r"a replay; operands x = -2.0"):
            t.forward()
        with pytest.raises(FloatingPointError, match="log produced"):
            f([[1.0], [-3.0]])
        assert f([2.0])[0] == pytest.approx(3 * math.log(4.0))


def test_anomaly_in_backward_finds_the_row_whose_partial_breaks_the_gradient():
    with Tape("bwd") as t:
        x = Value(0.0, label="x")
        h = x * 2.0
        s = h.sqrt()                             # d sqrt / dh = inf at 0
        s.label = "root of h"
        out = s * 3.0 + x
    out.backward()                               # without the check: inf, as in IEEE
    assert math.isinf(x.grad)
    x.grad = 0.0
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"backward through sqrt at row 2 of tape "
                           r"'bwd' 'root of h': its gradient 3.0 times its local partial inf "
                           r"with respect to operand 0 \(row 1, value 0.0\) is inf"):
            out.backward()
        ok = Value(4.0)
        ok.sqrt().backward()
    assert ok.grad == 0.25
    assert t.value(0).label == "x"
