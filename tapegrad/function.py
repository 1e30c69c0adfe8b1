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

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _context, _graph
from ._backend import for_array, is_foreign_array
from ._dask import is_dask_array
from ._plan import Backward, Directional, Plan
from ._sweep import raise_anomaly
from .engine import Value
from .ops import GUARDS, OPS

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
        self._compiling = threading.Lock()

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
        with self._compiling:                # threads calling it first wait for one build
            if self._epoch == t.epoch:
                return
            cols = t.columns()
            rows = self._program_rows(cols)
            self._plan = Plan.build(cols, rows, self._in_rows)
            self._in_local = self._plan.local(self._in_rows)
            self._out_local = self._plan.local(self._out_rows)
            self._backward: Backward | None = None
            self._backends: dict = {}        # array API backends by (namespace, device)
            self._directional: Directional | None = None
            self._gradient: tuple | None = None   # (Function of the gradient, leaf positions)
            self._patterns: dict = {}
            self._epoch = t.epoch            # last: other threads test it

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
        """Current values of the plan's leaves: mirrors of other tapes' leaves read from
        those leaves' ``.data`` (as backward() does), except at inputs, which every
        caller overwrites with the batch (their entries are stale)."""
        plan = self._plan
        out = self._tape.values[plan.rows[plan.leaves]]
        mirrors = self._mirrors()
        if mirrors[0]:
            out[mirrors[0]] = [leaf.data for leaf in mirrors[1]]
        return out

    def _mirrors(self) -> tuple[list[int], list[Value]]:
        """(positions in the plan's leaves, leaf Values) of the mirror rows of other
        tapes' leaves that are not inputs (found once per compile)."""
        found = getattr(self, "_mirror_leaves", None)
        if found is None or found[0] is not self._plan:
            plan = self._plan
            rows = self._tape.rows_object()
            at, leaves = [], []
            if rows.has_links():
                links = dict(rows.links())
                inputs = set(self._in_rows.tolist())
                for k, r in enumerate(plan.rows[plan.leaves].tolist()):
                    if r in links and r not in inputs:
                        at.append(k)
                        leaves.append(links[r])
            found = self._mirror_leaves = (plan, (at, leaves))
        return found[1]

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
        back = self._backward_schedule()
        batch, one = self._batch(x)
        if batch.shape[0] == 0:
            return np.empty(0), np.empty((0, self.n_inputs))
        anomaly = bool(_context.anomaly.depth)
        vals, grads = [], []
        for part in self._chunks(batch):
            values = self._values(part)
            self._run(values)
            adj = back.run(values, anomaly=anomaly, chain_rows=False)
            found = back.anomaly_found
            if found is not None:
                local, slot, partial, grad = found
                raise_anomaly(self._tape.rows_object(), int(self._plan.rows[local]), slot,
                              partial, grad)
            vals.append(np.atleast_1d(values[self._out_local[0]]))
            grads.append(np.atleast_2d(adj[self._in_local].T))
        v = np.concatenate(vals)
        g = np.concatenate(grads)
        return (float(v[0]), g[0]) if one else (v, g)

    # -- derivatives beyond one gradient (docs/derivatives.md) --------------------------

    def _backward_schedule(self) -> Backward:
        """The backward schedule of the (compiled) plan, built on first use."""
        back = self._backward
        if back is None:
            # not exact: rows that only feed a guard are in the plan, not in the gradient
            back = self._backward = Backward(self._plan, int(self._out_local[0]),
                                             exact=self._guards.size == 0)
        return back

    def _sweeps(self) -> Directional:
        self._compile()
        sweeps = self._directional
        if sweeps is None:
            sweeps = self._directional = Directional(self._backward_schedule(),
                                                     self._in_local, self._out_local)
        return sweeps

    def directional(self, batch: object, seeds: object, reverse: bool = False) -> np.ndarray:
        """Many directional derivatives at once: ``J @ S`` or ``J.T @ S`` per sample.

        The kernel of :meth:`jacobian`, :meth:`jvp` and :meth:`vjp`: one forward
        replay and one set of local partials per chunk of samples, all ``K``
        directions swept together along a trailing axis.

        Parameters
        ----------
        batch : array_like
            Inputs, shape ``(B, n_in)``.
        seeds : array_like
            Forward: input tangents ``(B, n_in, K)``. Reverse: output cotangents
            ``(B, n_out, K)``.
        reverse : bool
            Reverse mode (vector-Jacobian products) instead of forward mode.

        Returns
        -------
        numpy.ndarray
            Forward: ``(B, n_out, K)`` (``J @ S``). Reverse: ``(B, n_in, K)``
            (``J.T @ S``).

        Raises
        ------
        ValueError
            If ``batch`` or ``seeds`` has the wrong shape.
        GuardError
            If a recorded comparison comes out differently for some sample.
        """
        self._compile()
        batch = np.asarray(batch, np.float64)
        seeds = np.asarray(seeds, np.float64)
        n_src = self.n_outputs if reverse else self.n_inputs
        if batch.ndim != 2 or batch.shape[1] != self.n_inputs:
            raise ValueError(f"batch must have shape (B, {self.n_inputs}), got {batch.shape}")
        if seeds.ndim != 3 or seeds.shape[:2] != (batch.shape[0], n_src):
            raise ValueError(f"seeds must have shape ({batch.shape[0]}, {n_src}, K), got "
                             f"{seeds.shape}")
        sw = self._sweeps()
        src = self._out_local if reverse else self._in_local
        dst = self._in_local if reverse else self._out_local
        n_samples, _, k_total = seeds.shape
        out = np.empty((n_samples, dst.size, k_total))
        per = 8 * self._plan.size
        kstep = max(1, min(k_total, _CHUNK_BYTES // per))
        bstep = max(1, _CHUNK_BYTES // (per * (kstep + 3)))
        check = self._anomaly_check(sw, reverse) if _context.anomaly.depth else None
        if check is None:               # the condensed sweep: arrays over its nodes only
            cd = sw.condensed
            per = 8 * max(cd.count + 1, 1)
            kstep = max(1, min(k_total, _CHUNK_BYTES // per))
            bstep = max(1, _CHUNK_BYTES // (8 * self._plan.size * 4 + per * kstep))
        for b0 in range(0, n_samples, bstep):
            values = self._values(batch[b0: b0 + bstep])
            self._run(values)
            part = sw.partials(values)
            one = values.ndim == 1
            if check is None:
                for k0 in range(0, k_total, kstep):
                    s = seeds[b0: b0 + bstep, :, k0: k0 + kstep]
                    seed = s[0] if one else s.transpose(1, 0, 2)
                    res = (cd.reverse if reverse else cd.forward)(part, seed)
                    out[b0: b0 + bstep, :, k0: k0 + kstep] = res[None] if one else \
                        res.transpose(1, 0, 2)
                continue
            for k0 in range(0, k_total, kstep):
                s = seeds[b0: b0 + bstep, :, k0: k0 + kstep]
                arr = np.zeros(values.shape + (s.shape[2],))
                seed = s[0] if one else s.transpose(1, 0, 2)
                if reverse:
                    np.add.at(arr, src, seed)
                    sw.reverse(part, arr, check)
                else:
                    arr[src] = seed
                    sw.forward(part, arr, check)
                res = arr[dst]
                out[b0: b0 + bstep, :, k0: k0 + kstep] = res[None] if one else \
                    res.transpose(1, 0, 2)
        return out

    def _anomaly_check(self, sw: Directional, reverse: bool):
        """Under detect_anomaly: a check raising FloatingPointError at the first row whose
        local partial times a finite tangent (adjoint) is nan or inf."""
        bw = sw.backward
        n = self._plan.rows.size
        kind = "adjoint" if reverse else "tangent"

        def check(p: np.ndarray, w0: np.ndarray, w1: np.ndarray, arr: np.ndarray) -> None:
            for slot, w, operand in ((0, w0, bw.t0[p]), (1, w1, bw.t1[p])):
                src = arr[bw.order[p]] if reverse else arr[operand]
                real = (operand < n).reshape((-1,) + (1,) * (w.ndim - 1))
                bad = ~np.isfinite(w) & np.isfinite(src) & real
                if bad.any():
                    at = np.argwhere(bad)[0]
                    local = int(bw.order[p][at[0]])
                    row = int(self._plan.rows[local])
                    raise FloatingPointError(
                        f"detect_anomaly: {'reverse' if reverse else 'forward'}-mode "
                        f"derivative through {OPS[self._plan.op[local]].name} at row {row} of "
                        f"tape {self._tape.name!r}{self._tape.describe(row)}: its local "
                        f"partial w.r.t. operand {slot} times a finite {kind} is "
                        f"{w[tuple(at)]!r}")
        return check

    def _like(self, v: object, n: int, samples: int, one: bool, name: str) -> np.ndarray:
        """``v`` as float64 ``(samples, n)``, checked against the expected shape."""
        try:
            arr = np.asarray(v)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be an array of real numbers: {err}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
        want = (n,) if one else (samples, n)
        if arr.shape != want:
            raise ValueError(f"{name} must have shape {want} to match x, got {arr.shape}")
        return arr.astype(np.float64).reshape(samples, n)

    def jacobian(self, x: object, sparse: bool = False) -> Any:
        """Jacobian of the outputs w.r.t. the inputs, per sample.

        Dense: forward mode (one tangent per input) when ``n_in <= n_out``, else
        reverse mode (one adjoint per output), all directions in one sweep.
        ``sparse=True``: one sample; the pattern (:meth:`jacobian_sparsity`) is
        compressed by a greedy distance-2 colouring of its columns (forward) or rows
        (reverse), whichever needs fewer colours, and each colour costs one sweep.

        Parameters
        ----------
        x : array_like
            Real numbers of shape ``(n_in,)`` or ``(B, n_in)`` (dense only).
        sparse : bool
            Evaluate only the structurally non-zero entries.

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_matrix or tuple
            Dense: shape ``(n_out, n_in)``, or ``(B, n_out, n_in)``. Sparse: a CSR
            matrix ``(n_out, n_in)`` if SciPy is importable, else ``(rows, cols,
            values)`` coordinate arrays.

        Raises
        ------
        ValueError
            If ``x`` has the wrong shape (or is a batch with ``sparse=True``).
        GuardError
            If a recorded comparison comes out differently for some sample.
        FloatingPointError
            Under :class:`detect_anomaly`, for a nan or inf value or derivative.
        """
        self._compile()
        batch, one = self._batch(x)
        n_in, n_out = self.n_inputs, self.n_outputs
        if sparse:
            return self._sparse_jacobian(batch, one)
        b = batch.shape[0]
        if b == 0:
            return np.empty((0, n_out, n_in))
        if n_in <= n_out:
            jac = self.directional(batch, np.broadcast_to(np.eye(n_in), (b, n_in, n_in)), False)
        else:
            jac = self.directional(batch, np.broadcast_to(np.eye(n_out), (b, n_out, n_out)),
                                   True).transpose(0, 2, 1)
        return jac[0] if one else jac

    def jvp(self, x: object, v: object) -> np.ndarray:
        """Jacobian-vector product ``J(x) @ v`` per sample (forward mode, one sweep).

        Parameters
        ----------
        x : array_like
            Shape ``(n_in,)`` or ``(B, n_in)``.
        v : array_like
            Tangents of the inputs, shaped like ``x``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_out,)``, or ``(B, n_out)``.

        Raises
        ------
        ValueError
            If ``x`` or ``v`` has the wrong shape.
        GuardError
            If a recorded comparison comes out differently for some sample.
        """
        return self._one_direction(x, v, self.n_inputs, "v (tangents)", reverse=False)

    def vjp(self, x: object, u: object) -> np.ndarray:
        """Vector-Jacobian product ``u @ J(x)`` per sample (reverse mode, one sweep).

        Parameters
        ----------
        x : array_like
            Shape ``(n_in,)`` or ``(B, n_in)``.
        u : array_like
            Cotangents of the outputs: shape ``(n_out,)``, or ``(B, n_out)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_in,)``, or ``(B, n_in)``.

        Raises
        ------
        ValueError
            If ``x`` or ``u`` has the wrong shape.
        GuardError
            If a recorded comparison comes out differently for some sample.
        """
        return self._one_direction(x, u, self.n_outputs, "u (cotangents)", reverse=True)

    def _one_direction(self, x: object, seed: object, size: int, what: str,
                       reverse: bool) -> np.ndarray:
        """:meth:`jvp` / :meth:`vjp`: one direction ``seed`` of ``size`` per sample."""
        self._compile()
        batch, one = self._batch(x)
        seeds = self._like(seed, size, batch.shape[0], one, what)
        out = self.directional(batch, seeds[:, :, None], reverse)[:, :, 0]
        return out[0] if one else out

    def _one_output(self, what: str) -> None:
        if self.n_outputs != 1:
            raise ValueError(f"{what} needs a Function with one output, this one has "
                             f"{self.n_outputs}")

    def gradient_function(self) -> Function:
        """The gradient as a recorded Function (one output only), built once.

        The rows this Function evaluates are copied to a private tape
        (:meth:`Tape.subtape`; the user's tape does not grow) and the
        reverse sweep is recorded there by :func:`tapegrad.grad`. Its inputs are all
        leaves the output reads (the inputs, then the other leaves, in row order), its
        outputs the ``n_in`` partial derivatives. Hessians are its Jacobian.

        Returns
        -------
        Function

        Raises
        ------
        ValueError
            If the Function has more than one output.
        NotImplementedError
            If an op on the way has no Value-level rule (see :func:`tapegrad.grad`).
        """
        return self._gradient_program()[0]

    def _gradient_program(self) -> tuple:
        self._one_output("the gradient program")
        self._compile()
        if self._gradient is None:
            from .derivatives import grad
            plan = self._plan
            copy = self._tape.subtape(plan.rows, f"{self._tape.name}-gradient")
            leaves = [copy.value(int(r)) for r in plan.leaves]
            grads = grad(copy.value(int(self._out_local[0])),
                         [copy.value(int(r)) for r in self._in_local])
            pos = np.searchsorted(plan.leaves, self._in_local)
            embed = np.zeros((plan.leaves.size, self.n_inputs))
            embed[pos, np.arange(self.n_inputs)] = 1.0
            self._gradient = (Function(leaves, grads), pos, embed)
        return self._gradient

    def _gradient_directions(self, batch: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Hessian times ``seeds`` ``(B, n_in, K)``: forward mode over the gradient
        program, the non-input leaves at their current values."""
        fn, pos, embed = self._gradient_program()
        leaves = np.repeat(self._leaf_values()[None, :], batch.shape[0], axis=0)
        leaves[:, pos] = batch
        lifted = np.zeros((batch.shape[0], embed.shape[0], seeds.shape[2]))
        lifted[:, pos] = seeds                 # the inputs' tangents; other leaves 0
        return fn.directional(leaves, lifted, False)

    def hessian(self, x: object, sparse: bool = False) -> Any:
        """Hessian of the output w.r.t. the inputs, per sample (one output only).

        The Jacobian of the recorded gradient program (:meth:`gradient_function`) by
        forward mode: ``n_in`` tangents in one sweep (forward over reverse).
        ``sparse=True``: one sample; the pattern (:meth:`hessian_sparsity`) is
        compressed by a greedy distance-2 column colouring, one Hessian-vector product
        per colour.

        Parameters
        ----------
        x : array_like
            Shape ``(n_in,)`` or ``(B, n_in)`` (dense only).
        sparse : bool
            Evaluate only the structurally non-zero entries.

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_matrix or tuple
            Dense: ``(n_in, n_in)`` or ``(B, n_in, n_in)``. Sparse: a CSR matrix if
            SciPy is importable, else ``(rows, cols, values)``.

        Raises
        ------
        ValueError
            If the Function has more than one output, or ``x`` has the wrong shape.
        GuardError
            If a recorded comparison comes out differently for some sample.
        NotImplementedError
            If an op has no Value-level rule (see :func:`tapegrad.grad`).
        """
        self._one_output("hessian")
        self._compile()
        batch, one = self._batch(x)
        n = self.n_inputs
        if sparse:
            return self._sparse_hessian(batch, one)
        b = batch.shape[0]
        if b == 0:
            return np.empty((0, n, n))
        hess = self._gradient_directions(batch, np.broadcast_to(np.eye(n), (b, n, n)))
        return hess[0] if one else hess

    def hvp(self, x: object, v: object) -> np.ndarray:
        """Hessian-vector product ``H(x) @ v`` per sample (one output only; one sweep).

        Parameters
        ----------
        x : array_like
            Shape ``(n_in,)`` or ``(B, n_in)``.
        v : array_like
            Shaped like ``x``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_in,)``, or ``(B, n_in)``.

        Raises
        ------
        ValueError
            If the Function has more than one output, or ``x``/``v`` has the wrong shape.
        GuardError
            If a recorded comparison comes out differently for some sample.
        """
        self._one_output("hvp")
        self._compile()
        batch, one = self._batch(x)
        vec = self._like(v, self.n_inputs, batch.shape[0], one, "v")
        out = self._gradient_directions(batch, vec[:, :, None])[:, :, 0]
        return out[0] if one else out

    # -- sparsity ---------------------------------------------------------------------

    def _structure(self) -> tuple:
        """Operand columns with structurally zero edges cut (-1), and the packed
        dependency bits of every local row on the inputs."""
        found = self._patterns.get("structure")
        if found is None:
            plan = self._plan
            n = plan.rows.size
            differentiable = np.array([op.partials is not None and not op.zero_partials
                                       for op in OPS])[plan.op]
            x = np.where(differentiable & (plan.x < n), plan.x, -1).astype(np.int64)
            y = np.where(differentiable & (plan.y < n), plan.y, -1).astype(np.int64)
            bits = _graph.dependency_bits(x, y, plan.level, self._in_local)
            found = self._patterns["structure"] = (x, y, bits)
        return found

    def _jacobian_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        self._compile()
        found = self._patterns.get("jacobian")
        if found is None:
            _, _, bits = self._structure()
            dense = np.unpackbits(bits[self._out_local], axis=1, count=self.n_inputs)
            found = self._patterns["jacobian"] = np.nonzero(dense)
        return found

    def _hessian_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        self._one_output("hessian_sparsity")
        self._compile()
        found = self._patterns.get("hessian")
        if found is None:
            plan = self._plan
            x, y, bits = self._structure()
            n = plan.rows.size
            reach = _graph.ancestors(x, y, plan.level, self._out_local)
            rows = np.flatnonzero(reach & (plan.level > 0))
            codes = plan.op[rows]
            left, right = [], []
            for kind, (a, b) in (("xx", (x, x)), ("xy", (x, y)), ("yy", (y, y))):
                has = np.array([kind in op.curvature.split() for op in OPS])[codes]
                r = rows[has]
                left.append(bits[a[r]])
                right.append(bits[b[r]])
            i, j = _graph.bit_pairs(np.concatenate(left), np.concatenate(right),
                                    self.n_inputs)
            flat = np.unique(np.concatenate((i * self.n_inputs + j, j * self.n_inputs + i)))
            found = self._patterns["hessian"] = (flat // self.n_inputs, flat % self.n_inputs)
            del n
        return found

    def jacobian_sparsity(self) -> np.ndarray:
        """Which Jacobian entries can be non-zero, from the recorded structure.

        Entry ``(i, j)`` is True when output ``i`` depends on input ``j`` through ops
        whose partials are not structurally zero (``heaviside`` and comparisons cut a
        dependency). It does not depend on input values.

        Returns
        -------
        numpy.ndarray
            Booleans of shape ``(n_out, n_in)``.
        """
        i, j = self._jacobian_pattern()
        out = np.zeros((self.n_outputs, self.n_inputs), bool)
        out[i, j] = True
        return out

    def hessian_sparsity(self) -> np.ndarray:
        """Which Hessian entries can be non-zero (one output only), from the structure.

        The union, over the rows the output depends on, of the nonlinear interactions
        of each op (``curvature`` in the op table): ``x * y`` couples the inputs ``x``
        depends on with those of ``y``; ``tanh(x)`` couples those of ``x`` with
        themselves; ``+ - neg``, ``x * 3`` and piecewise-linear ops add nothing.
        Symmetric; independent of input values.

        Returns
        -------
        numpy.ndarray
            Booleans of shape ``(n_in, n_in)``.

        Raises
        ------
        ValueError
            If the Function has more than one output.
        """
        i, j = self._hessian_pattern()
        out = np.zeros((self.n_inputs, self.n_inputs), bool)
        out[i, j] = True
        return out

    def _sparse_jacobian(self, batch: np.ndarray, one: bool) -> Any:
        if not one:
            raise ValueError(f"jacobian(x, sparse=True) takes one sample of shape "
                             f"({self.n_inputs},), got {batch.shape}; call it per sample")
        i, j = self._jacobian_pattern()
        n_out, n_in = self.n_outputs, self.n_inputs
        by_col = _graph.colour_columns(i, j, (n_out, n_in))
        by_row = _graph.colour_columns(j, i, (n_in, n_out))
        cols_c = int(by_col.max()) + 1 if by_col.size else 0
        rows_c = int(by_row.max()) + 1 if by_row.size else 0
        if i.size == 0:
            return _sparse_result(i, j, np.zeros(0), (n_out, n_in))
        if cols_c <= rows_c:
            seeds = np.zeros((n_in, cols_c))
            seeds[np.arange(n_in), by_col] = 1.0
            compressed = self.directional(batch, seeds[None], False)[0]
            values = compressed[i, by_col[j]]
            self._last_colours = cols_c
        else:
            seeds = np.zeros((n_out, rows_c))
            seeds[np.arange(n_out), by_row] = 1.0
            compressed = self.directional(batch, seeds[None], True)[0]
            values = compressed[j, by_row[i]]
            self._last_colours = rows_c
        return _sparse_result(i, j, values, (n_out, n_in))

    def _sparse_hessian(self, batch: np.ndarray, one: bool) -> Any:
        n = self.n_inputs
        if not one:
            raise ValueError(f"hessian(x, sparse=True) takes one sample of shape ({n},), got "
                             f"{batch.shape}; call it per sample")
        i, j = self._hessian_pattern()
        if i.size == 0:
            return _sparse_result(i, j, np.zeros(0), (n, n))
        colour = _graph.colour_columns(i, j, (n, n))
        count = int(colour.max()) + 1
        seeds = np.zeros((n, count))
        seeds[np.arange(n), colour] = 1.0
        compressed = self._gradient_directions(batch, seeds[None])[0]
        self._last_colours = count
        return _sparse_result(i, j, compressed[i, colour[j]], (n, n))

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
        back = self._backward_schedule()
        be, values, one = self._array_values(x)
        anomaly = bool(_context.anomaly.depth)
        values = self._plan.run_array(values, be, self._tape.describe, anomaly=anomaly)
        adj = back.run_array(values, be, anomaly=anomaly)
        found = back.anomaly_found
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


def _sparse_result(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                   shape: tuple[int, int]) -> Any:
    """A CSR matrix when SciPy is importable, else the ``(rows, cols, values)`` tuple."""
    try:
        from scipy import sparse
    except ImportError:
        return rows, cols, values
    return sparse.csr_matrix((values, (rows, cols)), shape=shape)

def _rebuild(tape: Any, in_rows: list[int], out_rows: list[int], single: bool) -> Function:
    """The Function from ``in_rows`` to ``out_rows`` of ``tape`` (unpickling)."""
    outs = [tape.value(r) for r in out_rows]
    return Function([tape.value(r) for r in in_rows], outs[0] if single else outs)


def _sequence(obj: object, what: str) -> Sequence:
    if isinstance(obj, (list, tuple)):
        return obj
    raise TypeError(f"{what} must be a list or tuple of Values, got {type(obj).__name__}")
