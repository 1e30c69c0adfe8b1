"""The tape file format: a versioned ``.npz`` of plain arrays (no pickle).

:func:`write` stores a tape's columns, labels and scopes; :func:`read` checks a file's
arrays for names, dtypes, shapes and consistency before handing them to the tape, and
raises ``ValueError`` for anything that is not a tape file this version reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ._npzfile import Header, Member, NpzReader, check_members
from .ops import OPS

FORMAT = "tapegrad-tape"
FORMAT_VERSION = 1
_FILE_ARRAYS = {name: Member(kinds, ndim) for name, (kinds, ndim) in {
    # name: (dtype kinds, number of dimensions)
    "format": ("U", 0), "version": ("iu", 0), "name": ("U", 0), "opnames": ("U", 1),
    "op": ("iu", 1), "args": ("iu", 2), "const": ("f", 1), "value": ("f", 1),
    "grad": ("f", 1), "level": ("iu", 1), "label_rows": ("iu", 1),
    "label_text_utf8": ("u", 1), "label_text_ends": ("iu", 1),
    "scope_names_utf8": ("u", 1), "scope_names_ends": ("iu", 1),
    "mark_rows": ("iu", 1), "mark_ids": ("iu", 1),
}.items()}
_STRING_BYTES = {"format": 4096, "name": 1 << 22, "opnames": 1 << 20}
"""Bytes at most in the members that do not grow with the rows."""


def _pack_strings(key: str, texts: list[str]) -> dict[str, np.ndarray]:
    """Strings as one UTF-8 byte array and end offsets: any text survives, NUL included."""
    encoded = [t.encode("utf-8") for t in texts]
    return {f"{key}_utf8": np.frombuffer(b"".join(encoded), np.uint8),
            f"{key}_ends": np.cumsum([len(b) for b in encoded], dtype=np.int64)}


def _unpack_strings(data: dict[str, np.ndarray], key: str, where: str) -> list[str]:
    blob, ends = data[f"{key}_utf8"], data[f"{key}_ends"]
    if ends.size and (ends[-1] != blob.size or (np.diff(ends, prepend=0) < 0).any()):
        raise ValueError(f"{where}: {key} offsets do not match their bytes")
    raw = blob.tobytes()
    try:
        return [raw[a:b].decode("utf-8") for a, b in zip([0, *ends[:-1].tolist()], ends.tolist())]
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: {key} is not valid UTF-8 ({err})") from None


def _unreadable(where: str) -> Callable[[str, str | None], str]:
    def message(kind: str, detail: str | None) -> str:
        why = {"archive": "not an .npz archive",
               "npy": "a single .npy array, not an .npz archive"}.get(kind, detail)
        if kind == "archive" and detail:
            why += f": {detail}"
        return f"{where} is not a readable tapegrad tape file ({why})"
    return message


def _too_big(where: str, key: str, h: Header, limit: int, unit: str) -> ValueError:
    return ValueError(f"{where}: array {key!r} declares shape {h.shape} of {h.dtype}, more "
                      f"than {limit} {unit}")


def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a tape file, checked for shape and consistency (ValueError if not).

    Member headers are checked against the schema (names, dtypes, dimensions, every
    per-row column of the same length as ``op``, the other members within what that
    many rows need) before any data is read; see :mod:`tapegrad._npzfile`.
    """
    where = os.fspath(path)
    with NpzReader(where, what="tape file", max_members=len(_FILE_ARRAYS) + 16,
                   unreadable=_unreadable(where)) as npz:
        return _read(npz, where)


def _read(npz: NpzReader, where: str) -> dict[str, np.ndarray]:
    heads = npz.headers
    check_members(heads, _FILE_ARRAYS, where, "tapegrad tape file")
    for key, limit in _STRING_BYTES.items():
        if heads[key].nbytes > limit:
            raise _too_big(where, key, heads[key], limit, "bytes")
    data = npz.read_all(("format", "version", "name", "opnames"))
    if str(data["format"]) != FORMAT:
        raise ValueError(f"{where} is not a tapegrad tape file (format {str(data['format'])!r})")
    if int(data["version"]) != FORMAT_VERSION:
        raise ValueError(f"{where} has tape format version {int(data['version'])}; this "
                         f"tapegrad reads version {FORMAT_VERSION}")
    codes = {op.name: op.code for op in OPS}
    unknown = [str(n) for n in data["opnames"] if str(n) not in codes]
    if unknown:
        raise ValueError(f"{where} uses ops this tapegrad does not know: {unknown}")
    n = heads["op"].shape[0]
    for key in ("args", "const", "value", "grad", "level"):
        if heads[key].shape[0] != n:
            raise ValueError(f"{where}: column {key!r} has {heads[key].shape[0]} rows, "
                             f"opcodes have {n}")
    if heads["args"].shape[1:] != (2,):
        raise ValueError(f"{where}: 'args' must have two columns")
    for key in ("label_rows", "label_text_ends"):
        if heads[key].size > n:
            raise _too_big(where, key, heads[key], n, "labels (one per row of its "
                                                       f"{n} rows)")
    for key in ("mark_rows", "mark_ids"):
        if heads[key].size > n + 1:
            raise ValueError(f"{where}: scope marks are inconsistent ({heads[key].size} "
                             f"{key} for {n} rows)")
    # every member is now bounded by n rows, except the scope names (bounded below by
    # their offsets); none declares more than its zip entry holds (NpzReader)
    data.update(npz.read_all(("op", "args", "const", "value", "grad", "level", "label_rows",
                              "label_text_ends", "scope_names_ends", "mark_rows",
                              "mark_ids")))
    for key in ("label_text", "scope_names"):
        ends, blob = data[f"{key}_ends"], heads[f"{key}_utf8"]
        if blob.size != (int(ends[-1]) if ends.size else 0):
            raise ValueError(f"{where}: {key} offsets do not match their bytes")
        data[f"{key}_utf8"] = npz.read(f"{key}_utf8")
    if data["op"].size and (data["op"].min() < 0 or data["op"].max() >= data["opnames"].size):
        raise ValueError(f"{where}: opcodes out of range of its op table")
    op = np.array([codes[str(name)] for name in data["opnames"]], np.int8)[data["op"]]
    args = data["args"]
    rows = np.arange(n)
    if ((args < -1) | (args >= rows[:, None])).any():
        raise ValueError(f"{where}: an operand refers to a row that is not before it")
    arity = np.array([o.arity for o in OPS])[op]
    used = (args >= 0).sum(axis=1)
    unary_bad = (arity == 1) & ((args[:, 0] < 0) | (args[:, 1] >= 0))
    if ((arity == 0) & (used != 0)).any() or unary_bad.any() or ((arity == 2) & (used == 0)).any():
        raise ValueError(f"{where}: operands do not match the ops' arities")
    level = data["level"].astype(np.int64)
    expect = np.zeros(n, np.int64)
    for k in (0, 1):
        a = args[:, k]
        expect = np.maximum(expect, np.where(a >= 0, level[np.maximum(a, 0)] + 1, 0))
    if not np.array_equal(expect, level):
        raise ValueError(f"{where}: levels do not match the operands (corrupted rows)")
    labels = _unpack_strings(data, "label_text", where)
    scopes = _unpack_strings(data, "scope_names", where)
    if data["label_rows"].size != len(labels) or (
            data["label_rows"].size and (data["label_rows"].min() < 0
                                         or data["label_rows"].max() >= n)):
        raise ValueError(f"{where}: labels refer to rows outside the tape")
    marks, ids = data["mark_rows"], data["mark_ids"]
    if (marks.size != ids.size or marks.size == 0 or marks[0] != 0
            or (np.diff(marks) <= 0).any() or marks.max() > n or ids.min() < 0
            or ids.max() >= max(len(scopes), 1)):
        raise ValueError(f"{where}: scope marks are inconsistent")
    data["op"] = op
    data["labels"] = dict(zip(data["label_rows"].tolist(), labels))
    data["scopes"] = scopes
    return data


def write(path: str | os.PathLike, name: str, cols, labels: dict[int, str],
          scope_names: list[str], mark_rows: list[int], mark_ids: list[int]) -> None:
    """Write a tape's rows (``cols``: :class:`tapegrad._sweep.Columns`) to ``path``."""
    items = sorted(labels.items())
    arrays = {
        "format": np.array(FORMAT), "version": np.array(FORMAT_VERSION),
        "name": np.array(name), "opnames": np.array([op.name for op in OPS]),
        "op": cols.op, "args": np.stack([cols.a0, cols.a1], axis=1),
        "const": cols.const, "value": cols.value, "grad": cols.grad,
        "level": cols.level,
        "label_rows": np.array([r for r, _ in items], np.int64),
        **_pack_strings("label_text", [t for _, t in items]),
        **_pack_strings("scope_names", scope_names),
        "mark_rows": np.array(mark_rows, np.int64),
        "mark_ids": np.array(mark_ids, np.int64),
    }
    with open(path, "wb") as f:
        np.savez(f, **arrays)
