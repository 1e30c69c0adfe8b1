"""Dask arrays in, Dask arrays out: ``Function`` calls on arrays chunked along samples.

Imported only when a Dask array reaches a :class:`~tapegrad.Function` (``import
tapegrad`` does not import Dask). Each call takes a :meth:`Function.standalone` copy
(non-input leaves frozen at their values at call time), puts it in the graph once as a
key of its own (one transfer and one plan compilation per worker, not per block) and
maps it over the row blocks with :func:`dask.array.map_blocks`.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from typing import Any

import numpy as np

_lock = threading.Lock()

WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
"""Environment for Dask worker processes that evaluate Functions (docs/scale-out.md).

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches
off glibc's adaptive mmap threshold: every NumPy temporary larger than 128 KiB is then
a fresh ``mmap`` whose pages fault in again on each use. A replay makes many such
temporaries per block; on the 2-core test machine that made blocks 2-3x slower than in
the client. These settings keep freed blocks below 32 MiB in the heap for reuse.
Pass them as ``dask.config.set({"distributed.nanny.pre-spawn-environ": {...}})``
before starting a cluster, or set them in the workers' environment."""


def is_dask_array(x: object) -> bool:
    """Whether ``x`` is a Dask collection (without importing Dask)."""
    return type(x).__module__.startswith("dask.") and hasattr(x, "__dask_graph__")


def _prepare(f: Any, x: Any) -> tuple[Any, Any]:
    """``x`` checked and chunked along the samples only; the Function as a graph key."""
    import dask
    import dask.array as da

    if not isinstance(x, da.Array):
        raise TypeError(f"a Function takes Dask arrays, not {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != f.n_inputs:
        raise ValueError(f"a Dask array of inputs must have shape (B, {f.n_inputs}), got "
                         f"{x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"inputs must be real numbers, got dtype {x.dtype}")
    if len(x.chunks[1]) > 1:
        warnings.warn(f"the Dask array is chunked along its inputs axis ({len(x.chunks[1])} "
                      "chunks); rechunking it to one chunk on axis 1 (each block needs whole "
                      "samples). Chunk it along the samples only to avoid the rechunk: "
                      "x.rechunk({1: -1})", UserWarning, stacklevel=4)
        x = x.rechunk({1: -1})
    frozen = f.standalone()
    key = f"tapegrad-function-{uuid.uuid4().hex}"
    return x, dask.delayed(frozen, name=key, pure=True, traverse=False)


def _ready(f: Any) -> Any:
    with _lock:                      # one compilation per worker process
        f.rows                       # noqa: B018 - compiles the plan
    return f


def _call_block(block: np.ndarray, f: Any) -> np.ndarray:
    return _ready(f)(block)


def _value_and_grad_block(block: np.ndarray, f: Any) -> np.ndarray:
    v, g = _ready(f).value_and_grad(block)
    return np.concatenate((np.reshape(v, (-1, 1)), g), axis=1)


def call(f: Any, x: Any) -> Any:
    """``f(x)`` for a Dask array ``x`` of shape ``(B, n_in)``: a lazy ``(B, n_out)``."""
    import dask.array as da

    x, func = _prepare(f, x)
    return da.map_blocks(_call_block, x, func, dtype=np.float64,
                         chunks=(x.chunks[0], (f.n_outputs,)),
                         name=f"tapegrad-call-{uuid.uuid4().hex}", meta=np.empty((0, 0)))


def value_and_grad(f: Any, x: Any) -> tuple[Any, Any]:
    """``f.value_and_grad(x)`` for a Dask array: lazy ``(B,)`` values, ``(B, n_in)``
    gradients, both slices of one map over the blocks (computed together, each block
    is evaluated once)."""
    import dask.array as da

    x, func = _prepare(f, x)
    both = da.map_blocks(_value_and_grad_block, x, func, dtype=np.float64,
                         chunks=(x.chunks[0], (1 + f.n_inputs,)),
                         name=f"tapegrad-value-and-grad-{uuid.uuid4().hex}",
                         meta=np.empty((0, 0)))
    return both[:, 0], both[:, 1:]
