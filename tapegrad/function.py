"""``Function``: a recorded computation as a batched NumPy function of its inputs.

    with Tape():
        x = [Value(0.0), Value(0.0)]
        score = model(x)
    f = Function(inputs=x, outputs=score)
    f([0.5, -1.0])                       # shape (1,)
    f(grid)                              # grid (B, 2) -> (B, 1), one vectorized replay
    values, grads = f.value_and_grad(grid)   # (B,), (B, 2)

Only the rows the outputs depend on are evaluated, plus the comparisons recorded
before the last output (they decided which ops were recorded) and what those read;
each comparison is checked for every sample (:class:`tapegrad.GuardError`). Leaves
that are not inputs (the model's parameters, say) enter at their current ``.data``
on every call; list them among the inputs to vary them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _context, _graph
from ._backend import for_array, is_foreign_array
from ._dask import is_dask_array
from ._plan import Backward, Plan
from ._sweep import raise_anomaly
from .engine import Value
from .ops import GUARDS

__all__ = ["Function"]

_CHUNK_BYTES = 64 << 20       # value arrays are evaluated in batches of about this size
_GUARD_CODES = np.array(sorted(GUARDS), np.int8)


class Function:
    """A recorded computation from ``inputs`` (leaf Values) to ``outputs`` (Values).

    Calling it replays the rows the outputs depend on for new input values, batched
    over samples; the tape itself is not changed.

    Parameters
    ----------
    inputs : list or tuple of Value
        Leaves used on the outputs' tape (its own, or leaves of other tapes linked into
        it), each at most once.
    outputs : Value or list or tuple of Value
        The results, all on one tape.

    Raises
    ------
    TypeError
        If ``inputs`` or ``outputs`` is not a list or tuple (``outputs`` may be one
        Value) or holds something other than Values.
    ValueError
        If there is no output, the outputs are on several tapes, an input is not a
        leaf, not used on the outputs' tape, or repeated.

    Examples
    --------
    >>> from tapegrad import Function, Tape, Value
    >>> with Tape():
    ...     x, y = Value(0.0), Value(0.0)
    ...     z = x * y + x
    >>> f = Function(inputs=[x, y], outputs=z)
    >>> f([2.0, 3.0])
    array([8.])
    >>> f([[1.0, 1.0], [2.0, 3.0]])
    array([[2.],
           [8.]])
    >>> f.value_and_grad([2.0, 3.0])
    (8.0, array([4., 2.]))
    """

    def __init__(self, inputs: Sequence[Value], outputs: Value | Sequence[Value]) -> None:
        single = isinstance(outputs, Value)
        outs = [outputs] if single else list(_sequence(outputs, "outputs"))
        ins = list(_sequence(inputs, "inputs"))
        if not outs:
            raise ValueError("Function needs at least one output")
        for k, v in enumerate(outs):
            if not isinstance(v, Value):
                raise TypeError(f"outputs[{k}] must be a Value, got {type(v).__name__}")
        tape = outs[0].tape
        for k, v in enumerate(outs):
            if v.tape is not tape:
                raise ValueError(f"outputs[{k}] is on tape {v.tape.name!r}, outputs[0] on "
                                 f"{tape.name!r}: all outputs must be on one tape")
        for k, v in enumerate(ins):
            if not isinstance(v, Value):
                raise TypeError(f"inputs[{k}] must be a leaf Value, got {type(v).__name__}")
            if not v.is_leaf():
                raise ValueError(f"inputs[{k}] is not a leaf (it was computed by an op); "
                                 "inputs must be Values made with Value(x)")
            try:
                tape.row_of(v)
            except ValueError:
                raise ValueError(f"inputs[{k}] is not used on tape {tape.name!r}, where the "
                                 "outputs were recorded") from None
        if len({id(v) for v in ins}) != len(ins):
            raise ValueError("inputs must not repeat a Value")
        self.inputs = ins
        self.outputs = outs
        self.single_output = single
        self._tape = tape
        self._epoch: int | None = None

    @property
    def n_inputs(self) -> int:
        """The number of inputs."""
        return len(self.inputs)

    @property
    def n_outputs(self) -> int:
        """The number of outputs."""
        return len(self.outputs)

    @property
    def tape(self) -> Any:
        """The tape the outputs were recorded on."""
        return self._tape

    @property
    def rows(self) -> np.ndarray:
        """Tape rows a call evaluates or reads, an ascending int array (valid until the
        tape compacts)."""
        self._compile()
        return self._plan.rows

    def _compile(self) -> None:
        """(Re)build the plan if the tape's rows moved since the last call."""
        t = self._tape
        if self._epoch == t.epoch:
            return
        cols = t.columns()
        rows = self._program_rows(cols)
        self._plan = Plan.build(cols, rows, self._in_rows)
        self._in_local = self._plan.local(self._in_rows)
        self._out_local = self._plan.local(self._out_rows)
        self._backward: Backward | None = None
        self._backends: dict = {}            # array API backends by (namespace, device)
        self._epoch = t.epoch

    def _program_rows(self, cols: Any) -> np.ndarray:
        """Set the input, output and guard rows; the tape rows a call evaluates or reads."""
        t = self._tape
        self._in_rows = np.array([t.row_of(v) for v in self.inputs], np.int64)
        self._out_rows = np.array([v.row for v in self.outputs], np.int64)
        self._guards = self._guards_to_check(cols)
        needed = _graph.ancestors(cols.a0, cols.a1, cols.level,
                                  np.concatenate((self._out_rows, self._guards)))
        needed[self._in_rows] = True
        return np.flatnonzero(needed)

    # -- pickling ------------------------------------------------------------------------

    def standalone(self) -> Function:
        """This Function over a private tape holding only the rows it evaluates.

        The new tape (:meth:`Tape.subtape`) copies :attr:`rows`, renumbered, so the copy
        is small even when the outputs were recorded on a tape of millions of unrelated
        rows. Leaves that are not inputs (the model's parameters) are **frozen** at
        their current ``.data``: the copy no longer follows them. Results are identical
        bit for bit. Pickling sends exactly this (Dask workers, multiprocessing).

        Returns
        -------
        Function
            Same inputs, outputs, guards and results; ``n_inputs`` leaves of its own.

        Raises
        ------
        TypeError
            If the program holds a custom row (``Value(data, _children, _op)``, whose
            ``_backward`` is a Python closure).
        """
        return _rebuild(*self._standalone_state())

    def _standalone_state(self) -> tuple:
        t = self._tape
        if self._epoch == t.epoch:
            rows = self._plan.rows
        else:                                   # no Plan.build: it refuses custom rows
            rows = self._program_rows(t.columns())
        sub = t.subtape(rows, name=f"{t.name}/function")
        local = np.searchsorted(rows, self._in_rows), np.searchsorted(rows, self._out_rows)
        return sub, local[0].tolist(), local[1].tolist(), self.single_output

    def __reduce__(self) -> tuple:
        """Pickles :meth:`standalone`'s tape and rows (non-input leaves frozen)."""
        return _rebuild, self._standalone_state()

    def _guards_to_check(self, cols: Any) -> np.ndarray:
        """The comparisons recorded before the last output that the inputs can flip:
        they decided which ops ran, and replaying them checks that the recording still
        describes the program for new inputs (docs/replay.md)."""
        top = int(self._out_rows.max())
        guards = np.flatnonzero(np.isin(cols.op[:top], _GUARD_CODES))
        if guards.size == 0 or self._in_rows.size == 0:
            return guards[:0]
        depends = _graph.descendants(cols.a0, cols.a1, cols.level, self._in_rows, top)
        return guards[depends[guards]]

    def _batch(self, x: object) -> tuple[np.ndarray, bool]:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise ValueError(f"inputs must be an array of real numbers: {err}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"inputs must be real numbers, got dtype {arr.dtype}")
        if arr.ndim == 1 and arr.shape[0] == self.n_inputs:
            return arr.astype(np.float64)[None, :], True
        if arr.ndim == 2 and arr.shape[1] == self.n_inputs:
            return arr.astype(np.float64), False
        raise ValueError(f"expected shape ({self.n_inputs},) or (B, {self.n_inputs}) for "
                         f"{self.n_inputs} inputs, got {arr.shape}")

    def _values(self, batch: np.ndarray) -> np.ndarray:
        """Value array for ``batch``: ``(size,)`` for one sample (faster), else ``(size, B)``."""
        plan = self._plan
        one = batch.shape[0] == 1
        values = plan.new_values(None if one else batch.shape[0])
        leaf_values = self._leaf_values()
        values[plan.leaves] = leaf_values if one else leaf_values[:, None]
        values[self._in_local] = batch[0] if one else batch.T
        return values

    def _leaf_values(self) -> np.ndarray:
        """Current values of the plan's leaves (mirrors of other tapes' leaves refreshed)."""
        plan = self._plan
        rows = self._tape.rows_object()
        if rows.has_links():
            rows.refresh_links()               # as backward() does before it reads them
        return self._tape.values[plan.rows[plan.leaves]]

    def _chunks(self, batch: np.ndarray):
        step = max(1, _CHUNK_BYTES // (8 * self._plan.size * 3))
        for start in range(0, batch.shape[0], step):
            yield batch[start: start + step]

    def _run(self, values: np.ndarray) -> None:
        self._plan.run(values, self._tape.describe, anomaly=bool(_context.anomaly.depth))

    def __call__(self, x: object) -> np.ndarray:
        """Outputs for one input vector or a batch of them.

        Leaves that are not inputs enter at their current ``.data``.

        Parameters
        ----------
        x : array_like
            Real numbers of shape ``(n_in,)`` (one sample) or ``(B, n_in)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_out,)`` for one sample, ``(B, n_out)`` for a batch (float64).

        Raises
        ------
        ValueError
            If ``x`` is not real numbers of one of those shapes.
        GuardError
            If a recorded comparison comes out differently for some sample.
        FloatingPointError
            Under :class:`detect_anomaly`, at the first op that produces nan or inf.
        """
        if is_dask_array(x):
            from . import _dask
            return _dask.call(self, x)
        if is_foreign_array(x):
            return self._call_array(x)
        self._compile()
        batch, one = self._batch(x)
        if batch.shape[0] == 0:
            return np.empty((0, self.n_outputs))
        outs = []
        for part in self._chunks(batch):
            values = self._values(part)
            self._run(values)
            outs.append(np.atleast_2d(values[self._out_local].T))
        result = np.concatenate(outs) if len(outs) > 1 else outs[0]
        return result[0] if one else result

    def value_and_grad(self, x: object) -> tuple[np.ndarray | float, np.ndarray]:
        """Output and its gradient w.r.t. the inputs, per sample (one output only).

        Rows that only feed a checked comparison take no part in the gradient.

        Parameters
        ----------
        x : array_like
            Real numbers of shape ``(n_in,)`` (one sample) or ``(B, n_in)``.

        Returns
        -------
        value : float or numpy.ndarray
            The output: a float for one sample, shape ``(B,)`` for a batch.
        grad : numpy.ndarray
            Its gradient w.r.t. the inputs: shape ``(n_in,)``, or ``(B, n_in)``.

        Raises
        ------
        ValueError
            If the Function has more than one output, or ``x`` is not real numbers of
            one of those shapes.
        GuardError
            If a recorded comparison comes out differently for some sample.
        FloatingPointError
            Under :class:`detect_anomaly`, for a nan or inf value or gradient, as
            ``backward()`` does.
        """
        if self.n_outputs != 1:
            raise ValueError(f"value_and_grad needs a Function with one output, this one has "
                             f"{self.n_outputs}")
        if is_dask_array(x):
            from . import _dask
            return _dask.value_and_grad(self, x)
        if is_foreign_array(x):
            return self._value_and_grad_array(x)
        self._compile()
        if self._backward is None:
            # not exact: rows that only feed a guard are in the plan, not in the gradient
            self._backward = Backward(self._plan, int(self._out_local[0]),
                                      exact=self._guards.size == 0)
        batch, one = self._batch(x)
        if batch.shape[0] == 0:
            return np.empty(0), np.empty((0, self.n_inputs))
        anomaly = bool(_context.anomaly.depth)
        vals, grads = [], []
        for part in self._chunks(batch):
            values = self._values(part)
            self._run(values)
            adj = self._backward.run(values, anomaly=anomaly)
            found = self._backward.anomaly_found
            if found is not None:
                local, slot, partial, grad = found
                raise_anomaly(self._tape.rows_object(), int(self._plan.rows[local]), slot,
                              partial, grad)
            vals.append(np.atleast_1d(values[self._out_local[0]]))
            grads.append(np.atleast_2d(adj[self._in_local].T))
        v = np.concatenate(vals)
        g = np.concatenate(grads)
        return (float(v[0]), g[0]) if one else (v, g)

    # -- other array libraries (array API) ----------------------------------------------

    def _array_values(self, x: Any) -> tuple[Any, Any, bool]:
        """(backend, ``(size, B)`` value array with constants, leaves and inputs, one
        sample?) for an array ``x`` of another array API library."""
        self._compile()
        be = for_array(x, self._backends)
        xp = be.xp
        if xp.isdtype(x.dtype, "complex floating") or not xp.isdtype(
                x.dtype, ("bool", "integral", "real floating")):
            raise ValueError(f"inputs must be real numbers, got dtype {x.dtype}")
        one = x.ndim == 1 and x.shape[0] == self.n_inputs
        if not (one or x.ndim == 2 and x.shape[1] == self.n_inputs):
            raise ValueError(f"expected shape ({self.n_inputs},) or (B, {self.n_inputs}) for "
                             f"{self.n_inputs} inputs, got {tuple(x.shape)}")
        batch = xp.astype(xp.reshape(x, (-1, self.n_inputs)), xp.float64)  # documented upcast
        plan = self._plan
        values = be.zeros(plan.size, batch.shape[0])
        fixed = self._fixed_rows()
        host = np.concatenate((plan.const_values, self._leaf_values()))
        values = be.put(values, fixed, be.asarray(host[:, None]))
        values = be.put(values, self._in_local, xp.permute_dims(batch, (1, 0)))
        return be, values, one

    def _fixed_rows(self) -> np.ndarray:
        """Local rows of the constants, then of the leaves (kept: backends cache them)."""
        plan = self._plan
        if getattr(self, "_fixed", None) is None or self._fixed[0] is not plan:
            consts = np.arange(plan.rows.size, plan.sink)
            self._fixed = (plan, np.concatenate((consts, plan.leaves)))
        return self._fixed[1]

    def _call_array(self, x: Any) -> Any:
        be, values, one = self._array_values(x)
        values = self._plan.run_array(values, be, self._tape.describe,
                                      anomaly=bool(_context.anomaly.depth))
        out = be.xp.permute_dims(be.take(values, self._out_local), (1, 0))
        return out[0, ...] if one else out

    def _value_and_grad_array(self, x: Any) -> tuple[Any, Any]:
        self._compile()
        if self._backward is None:
            self._backward = Backward(self._plan, int(self._out_local[0]),
                                      exact=self._guards.size == 0)
        be, values, one = self._array_values(x)
        anomaly = bool(_context.anomaly.depth)
        values = self._plan.run_array(values, be, self._tape.describe, anomaly=anomaly)
        adj = self._backward.run_array(values, be, anomaly=anomaly)
        found = self._backward.anomaly_found
        if found is not None:
            local, slot, partial, grad = found
            raise_anomaly(self._tape.rows_object(), int(self._plan.rows[local]), slot,
                          partial, grad)
        v = values[int(self._out_local[0]), ...]
        g = be.xp.permute_dims(be.take(adj, self._in_local), (1, 0))
        return (v[0], g[0, ...]) if one else (v, g)

    def __repr__(self) -> str:
        return (f"Function({self.n_inputs} inputs -> {self.n_outputs} outputs, "
                f"tape {self._tape.name!r})")


def _rebuild(tape: Any, in_rows: list[int], out_rows: list[int], single: bool) -> Function:
    """The Function from ``in_rows`` to ``out_rows`` of ``tape`` (unpickling)."""
    outs = [tape.value(r) for r in out_rows]
    return Function([tape.value(r) for r in in_rows], outs[0] if single else outs)


def _sequence(obj: object, what: str) -> Sequence:
    if isinstance(obj, (list, tuple)):
        return obj
    raise TypeError(f"{what} must be a list or tuple of Values, got {type(obj).__name__}")
