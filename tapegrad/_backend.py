"""Array backends for replays on arrays of any array API library (PyTorch, CuPy, ...).

The replay kernels (:meth:`tapegrad._plan.Plan.run_array`,
:meth:`tapegrad._plan.Backward.run_array`) need a handful of operations beyond the
array API's elementwise functions, and :class:`Backend` provides them for one namespace
and device: take rows, put rows, scatter-add rows, running sums/products along axis 0.
The standard has integer-array ``take`` but neither integer-array assignment nor a
scatter-add, so the generic :class:`Backend` writes rows functionally (``where`` over
the whole array: correct everywhere, slow) and :class:`MutableBackend` uses the
library's own in-place forms (``a[idx] = v``; ``index_add_`` for PyTorch,
``cupyx.scatter_add`` for CuPy). NumPy arrays never come here: their kernels are the
NumPy code of :mod:`tapegrad._plan` itself.

``array_api_compat`` is imported only when such an array arrives (``pip install
"tapegrad[array-api]"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_FAST = (list, tuple, np.ndarray, float, int, np.generic)
_LIBRARIES = ("torch", "cupy", "jax", "jaxlib", "array_api_strict", "mlx", "ndonnx", "sparse")


def is_foreign_array(x: object) -> bool:
    """Whether ``x`` is an array of an array API library other than NumPy."""
    t = type(x)
    if t in _FAST or isinstance(x, np.ndarray):
        return False
    return hasattr(x, "__array_namespace__") or t.__module__.split(".")[0] in _LIBRARIES


def for_array(x: Any, cache: dict) -> Backend:
    """The backend for ``x``'s namespace and device (one per pair in ``cache``)."""
    try:
        import array_api_compat as compat
    except ImportError:
        raise ImportError(f"calling a Function on a {type(x).__module__}.{type(x).__name__} "
                          "needs array-api-compat: pip install \"tapegrad[array-api]\"") from None
    xp = compat.array_namespace(x)
    device = compat.device(x)
    key = (xp.__name__, str(device))
    be = cache.get(key)
    if be is None:
        if compat.is_torch_namespace(xp):
            be = TorchBackend(xp, device)
        elif compat.is_cupy_namespace(xp):
            be = CupyBackend(xp, device)
        else:
            be = Backend(xp, device)
        cache[key] = be
    return be


class Backend:
    """Row operations on ``(rows, B)`` arrays of namespace ``xp`` using only the array API
    standard (2023.12: ``take``, ``where``, basic indexing); immutable arrays welcome."""

    def __init__(self, xp: Any, device: Any) -> None:
        self.xp = xp
        self.device = device
        self._index: dict[int, tuple[np.ndarray, Any]] = {}
        self._rules: dict[int, tuple] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.xp.__name__} on {self.device}>"

    # -- conversions -----------------------------------------------------------------------

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A host array (or scalar) on this backend's device."""
        return self.xp.asarray(a, dtype=dtype or self.xp.float64, device=self.device)

    def index(self, rows: np.ndarray) -> Any:
        """``rows`` (a host int array kept by its owner) flattened onto the device, cached."""
        hit = self._index.get(id(rows))
        if hit is None or hit[0] is not rows:
            flat = np.ascontiguousarray(np.asarray(rows, np.int64).ravel())
            hit = self._index[id(rows)] = (rows, self.xp.asarray(flat, device=self.device))
        return hit[1]

    def rules(self, op: Any) -> tuple:
        """The op's ``(forward, partials)`` for this namespace (``Op.array_rules``), cached."""
        hit = self._rules.get(op.code)
        if hit is None or hit[0] is not op:
            hit = self._rules[op.code] = (op, *op.array_rules(self.xp))
        return hit[1:]

    @staticmethod
    def to_numpy(a: Any) -> np.ndarray:
        """A NumPy copy of ``a`` (for messages and anomaly reports)."""
        if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
            return a.get()
        if hasattr(a, "cpu"):
            a = a.cpu()
        try:
            return np.from_dlpack(a)
        except (TypeError, BufferError, RuntimeError):
            return np.asarray(a)

    # -- row operations --------------------------------------------------------------------

    def zeros(self, rows: int, batch: int) -> Any:
        return self.xp.zeros((rows, batch), dtype=self.xp.float64, device=self.device)

    def take(self, a: Any, rows: np.ndarray) -> Any:
        """``a[rows]`` for a host index array of any shape (its shape + ``a.shape[1:]``)."""
        out = self.xp.take(a, self.index(rows), axis=0)
        if np.ndim(rows) != 1:
            out = self.xp.reshape(out, tuple(np.shape(rows)) + tuple(a.shape[1:]))
        return out

    def _full(self, v: Any, rows: np.ndarray, a: Any) -> Any:
        """``v`` (a scalar, or an array shaped like ``a[rows]``) as ``(len(rows), B)``."""
        xp = self.xp
        shape = (int(np.size(rows)),) + tuple(a.shape[1:])
        if not hasattr(v, "shape"):
            return xp.full(shape, float(v), dtype=xp.float64, device=self.device)
        if v.dtype != xp.float64:         # torch's where(c, 1.0, 0.5) is float32
            v = xp.astype(v, xp.float64)
        if np.ndim(rows) > 1:
            v = xp.reshape(v, shape)
        return xp.broadcast_to(v, shape)

    def put(self, a: Any, rows: np.ndarray, v: Any) -> Any:
        """``a`` with ``a[rows] = v`` (distinct rows); returns the array (new or ``a``)."""
        xp = self.xp
        key = ("put", id(rows))
        hit = self._index.get(key)
        if hit is None or hit[0] is not rows:
            flat = np.asarray(rows, np.int64).ravel()
            mask = np.zeros(a.shape[0], bool)
            mask[flat] = True
            pos = np.zeros(a.shape[0], np.int64)
            pos[flat] = np.arange(flat.size)
            hit = self._index[key] = (rows, xp.asarray(mask[:, None], device=self.device),
                                      xp.asarray(pos, device=self.device))
        _, mask, pos = hit
        src = self._full(v, rows, a)
        return xp.where(mask, xp.take(src, pos, axis=0), a)

    def add_at(self, a: Any, rows: np.ndarray, v: Any) -> Any:
        """``a`` with ``v`` added at ``rows`` (repeats accumulate in order, as
        ``np.add.at``): one put per round of distinct rows."""
        key = ("rounds", id(rows))
        hit = self._index.get(key)
        if hit is None or hit[0] is not rows:
            flat = np.asarray(rows, np.int64).ravel()
            order = np.argsort(flat, kind="stable")
            ranked = np.empty(flat.size, np.int64)
            starts = np.r_[0, np.flatnonzero(np.diff(flat[order])) + 1]
            counts = np.diff(np.r_[starts, flat.size])
            ranked[order] = np.arange(flat.size) - np.repeat(starts, counts)
            rounds = [np.flatnonzero(ranked == k) for k in range(int(ranked.max(initial=-1)) + 1)]
            hit = self._index[key] = (rows, [(at, flat[at]) for at in rounds])
        v = self._full(v, rows, a)
        for at, target in hit[1]:
            a = self.put(a, target, self.take(a, target) + self.take(v, at))
        return a

    def zero_rows(self, w: Any, dead: np.ndarray) -> Any:
        """``w`` with the rows where the host mask ``dead`` holds set to 0 (no 0 * inf)."""
        return self.xp.where(self.asarray(dead[:, None], self.xp.bool), 0.0, w)

    def cumulative(self, multiply: bool, a: Any) -> Any:
        """Running sums (products) down axis 0, in order (bit-identical to NumPy's)."""
        out = [a[0, ...]]
        for j in range(1, a.shape[0]):
            out.append(out[-1] * a[j, ...] if multiply else out[-1] + a[j, ...])
        return self.xp.stack(out, axis=0)


class MutableBackend(Backend):
    """Libraries whose arrays take integer-array assignment (``a[idx] = v``) in place."""

    def put(self, a: Any, rows: np.ndarray, v: Any) -> Any:
        a[self.index(rows)] = self._full(v, rows, a) if hasattr(v, "shape") else float(v)
        return a

    def zero_rows(self, w: Any, dead: np.ndarray) -> Any:
        if dead.any():
            w[self.index_mask(dead)] = 0.0
        return w

    def index_mask(self, mask: np.ndarray) -> Any:
        return self.xp.asarray(np.flatnonzero(mask), device=self.device)


class TorchBackend(MutableBackend):
    """PyTorch: scatter-add with ``index_add_`` (in order on the CPU)."""

    def add_at(self, a: Any, rows: np.ndarray, v: Any) -> Any:
        return a.index_add_(0, self.index(rows), self._full(v, rows, a))


class CupyBackend(MutableBackend):
    """CuPy: scatter-add with ``cupyx.scatter_add`` (atomic: any order)."""

    def add_at(self, a: Any, rows: np.ndarray, v: Any) -> Any:
        import cupyx

        cupyx.scatter_add(a, self.index(rows), self._full(v, rows, a))
        return a
