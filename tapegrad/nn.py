"""micrograd's neural-net modules on tapegrad Values.

Same constructors, same ``repr`` strings and the same initialisation (weights from
``random.uniform(-1, 1)`` drawn in micrograd's order, bias 0), so a seeded model
starts from exactly micrograd's parameters. Beyond micrograd:

* ``nonlin`` picks the activation: ``True``/``"relu"``, ``False``/``"linear"``,
  ``"tanh"`` or ``"sigmoid"`` (``MLP(nin, nouts, nonlin=...)`` for the hidden layers).
* every layer and neuron records its rows inside a :class:`tapegrad.scope`, so tape
  rows carry paths such as ``"layer0/neuron3"``.
* :meth:`Module.save` / :meth:`Module.load` store the parameters in a plain ``.npz``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from operator import mul
from threading import get_ident
from typing import Any, TypeVar

import numpy as np

from . import _context, _npzfile, _record, ops
from .engine import Value
from .tape import scope

__all__ = ["Module", "Neuron", "Layer", "MLP", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "linear", "tanh", "sigmoid")
"""Canonical names of the activations a :class:`Neuron` can apply."""

_REPR_NAMES = {"relu": "ReLU", "linear": "Linear", "tanh": "Tanh", "sigmoid": "Sigmoid"}
_APPLY = {"relu": Value.relu, "linear": None, "tanh": Value.tanh, "sigmoid": Value.sigmoid}
_ACT_OPS = {"relu": ops.RELU, "linear": None, "tanh": ops.TANH, "sigmoid": ops.SIGMOID}
_BULK_MIN = 16          # weights per layer from which bulk recording beats the loop

_FORMAT = "tapegrad.nn/1"     # stored under _META_FORMAT in every saved file
_META_FORMAT = "__format__"
_META_ARCH = "__architecture__"

M = TypeVar("M", bound="Module")

Tensors = dict[str, tuple[tuple[int, ...], list[Value]]]
"""Parameter tensors by name: (shape, the Values in row-major order)."""


def _activation(nonlin: object) -> str:
    """The canonical activation name for a ``nonlin`` argument, or a ValueError."""
    if isinstance(nonlin, (bool, np.bool_)):
        return "relu" if nonlin else "linear"
    if isinstance(nonlin, str) and nonlin in ACTIVATIONS:
        return nonlin
    raise ValueError("nonlin must be True or 'relu', False or 'linear', 'tanh' or 'sigmoid'; "
                     f"got {nonlin!r} ({type(nonlin).__name__})")


def _check_size(n: object, who: str, unit: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{who} needs a positive int number of {unit}, got {n!r} "
                        f"({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{who} needs a positive int number of {unit}, got {n!r}")


class Module:
    """Base class: ``parameters()``, ``zero_grad()``, ``save()`` and ``load()``.

    Subclasses override :meth:`parameters` (and, to name their arrays in saved files,
    :meth:`tensors`).
    """

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to 0."""
        for p in self.parameters():
            p.grad = 0.0

    def parameters(self) -> list[Value]:
        """Every trainable Value of the module, in a fixed order.

        Returns
        -------
        list of Value
            Empty for the base class.
        """
        return []

    # -- save / load ------------------------------------------------------------------

    def tensors(self) -> Tensors:
        """The parameters grouped into named tensors.

        This is what :meth:`save` writes, one array per entry. Subclasses without
        their own grouping store all parameters as one flat ``"parameters"`` array.

        Returns
        -------
        dict
            ``{name: (shape, values)}``: a shape tuple and the Values in row-major order.
        """
        params = self.parameters()
        return {"parameters": ((len(params),), params)}

    def architecture(self) -> str:
        """A text description saved with the parameters and checked on load.

        Returns
        -------
        str
            The repr, or ``"<class> with <n> parameters"`` for a class without one.
        """
        if type(self).__repr__ is object.__repr__:     # no address in the description
            return f"{type(self).__name__} with {len(self.parameters())} parameters"
        return repr(self)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters to ``path`` as an uncompressed ``.npz``.

        The file holds one float64 array per entry of :meth:`tensors` (e.g.
        ``"layer0/W"`` of shape ``(16, 2)``), plus ``"__architecture__"`` (see
        :meth:`architecture`) and ``"__format__"`` as string arrays; ``np.load(path)``
        reads it without pickle.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write, exactly that name (no ``.npz`` is appended).

        See Also
        --------
        load : read the file back into a model of the same architecture.
        """
        path = os.fspath(path)
        arrays = {name: np.array([v.data for v in values], dtype=np.float64).reshape(shape)
                  for name, (shape, values) in self.tensors().items()}
        arrays[_META_FORMAT] = np.array(_FORMAT)
        arrays[_META_ARCH] = np.array(self.architecture())
        with open(path, "wb") as f:      # a file object: numpy appends no ".npz"
            np.savez(f, **arrays)

    def load(self: M, path: str | os.PathLike[str]) -> M:
        """Set the parameters from a file written by :meth:`save`.

        Everything is checked before any parameter changes, so on an error the model is
        left untouched. Gradients are not touched. Only the member headers are read
        before those checks (see :mod:`tapegrad._npzfile`): an unexpected or oversized
        member is refused unread.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save`.

        Returns
        -------
        Module
            ``self``.

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        ValueError
            If the file is for another architecture or has other tensor shapes (the
            message names what was expected and what was found), or is not a tapegrad
            ``.npz``.
        """
        path = os.fspath(path)
        tensors = self.tensors()
        try:
            # the tensors, the two metadata entries, and room to name a few unexpected ones
            npz = _open_npz(path, max_members=len(tensors) + 2 + 16)
        except FileNotFoundError:
            raise FileNotFoundError(f"no parameter file at {path!r}") from None
        with npz:
            found, arch = _read_meta(npz, path)
            expected, in_file = self.architecture(), str(arch)
            mismatch = (f"{path!r} holds parameters of another architecture: "
                        f"expected {expected}, found {in_file}")
            if set(found) != set(tensors):
                raise ValueError(f"{mismatch} (tensors: expected {sorted(tensors)}, "
                                 f"found {sorted(found)})")
            for name, (shape, _) in tensors.items():
                head = found[name]
                if head.shape != shape:
                    raise ValueError(f"{mismatch} (tensor {name!r}: expected shape {shape}, "
                                     f"found {head.shape})")
                if head.dtype.kind not in "fiu":
                    raise ValueError(f"{path!r}: tensor {name!r} must hold real numbers, "
                                     f"found dtype {head.dtype}")
            # names, shapes and dtypes match the model: the data is what it needs
            updates = [(values, npz.read(name).astype(np.float64).ravel().tolist())
                       for name, (_, values) in tensors.items()]
        if in_file != expected:
            raise ValueError(mismatch)
        for values, numbers in updates:       # all checks passed: now write
            for v, x in zip(values, numbers):
                v.data = x
        return self


class _Scoped(Module):
    """A module whose forward records its rows inside ``scope(self.name)``.

    Scopes are on the hot path (the moons demo opens 36 per sample), so the scope
    object is built once, by the thread that set the name, and reused by that thread.
    Other threads build a fresh one per call: a scope object keeps per-entry state, so
    one object must never be open in two threads at once.
    """

    _name: str
    _scoped: tuple[int, scope]

    @property
    def name(self) -> str:
        """The scope name of this module's rows (``"layer0"``, ``"neuron3"``...; settable,
        a non-empty str)."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._scoped = (get_ident(), scope(name))     # validates the name
        self._name = name

    def _scope(self) -> scope:
        ident, sc = self._scoped
        return sc if ident == get_ident() else scope(self._name)


class _BulkCache:
    """What bulk recording of one layer's neurons worked out on its last call: the
    weights' rows (:func:`_record.record_layers` memo), the neurons' (class,
    activation, size, name) as checked, their scope paths by enclosing path; the first
    layer's cache also keeps the rows of the layers recorded with it (``stacks``)."""

    def __init__(self) -> None:
        self.memo: list = []
        self.stacks: dict = {}
        self.kinds: list = []
        self.paths: dict[str, list[str]] = {}

    def __deepcopy__(self, memo: dict) -> _BulkCache:
        return _BulkCache()             # a cache (holding a tape): a copy starts afresh

    def __reduce__(self) -> tuple:
        return _BulkCache, ()

    def neuron_paths(self, neurons: list[Neuron], layer: str) -> list[str]:
        """The neurons' scope paths inside the layer's scope path ``layer``."""
        paths = self.paths.get(layer)
        if paths is None:
            paths = self.paths[layer] = [f"{layer}/{n.name}" if layer else n.name
                                         for n in neurons]
        return paths


def _bulk_spec(neurons: list[Neuron], cache: _BulkCache) -> tuple | None:
    """``(weights, starts, activation op, memo)`` of a layer of ``neurons`` for
    :func:`_record.record_layers`, or None if they must be called one by one: a small
    layer (the loop is faster), neurons of a subclass or of mixed activations or sizes."""
    nin = len(neurons[0].w)
    if len(neurons) * nin < _BULK_MIN:
        return None
    kinds = [(type(n), n.activation, len(n.w), n.name) for n in neurons]
    if kinds != cache.kinds:
        if any(k[:3] != (Neuron, neurons[0].activation, nin) for k in kinds):
            return None
        cache.kinds = kinds
        cache.paths = {}
    return ([n.w for n in neurons], [n.b for n in neurons], _ACT_OPS[kinds[0][1]],
            cache.memo)


def _neuron_rows(neurons: list[Neuron], first: int) -> range:
    """The first row of each neuron's rows, for a layer written in bulk from ``first``."""
    stride = 2 * len(neurons[0].w) + (_ACT_OPS[neurons[0].activation] is not None)
    return range(first, first + stride * len(neurons), stride)


def _bulk_specs(layers: list[list[Neuron]], caches: list[_BulkCache]) -> list | None:
    """:func:`_bulk_spec` of every layer, or None as soon as one must be called (a small
    model's layers say so at once, before any other work)."""
    specs = []
    for ns, cache in zip(layers, caches):
        spec = _bulk_spec(ns, cache)
        if spec is None:
            return None
        specs.append(spec)
    return specs


def _record_in_bulk(layers: list[list[Neuron]], specs: list, caches: list[_BulkCache],
                    scopes: list[str], then: str,
                    x: Sequence[Value | float]) -> list[Value] | None:
    """Rows of layers of neurons (``specs`` from :func:`_bulk_specs`), each reading the
    previous one's results, written in bulk (:func:`_record.record_layers`) with the
    neurons' scope marks inside each layer's scope path ``scopes[k]``, then ``then``;
    the last layer's results, or None when the layers must be called (see
    :func:`_bulk_inputs`)."""
    t = _record.bulk_target()
    x = _bulk_inputs(x, len(layers[0][0].w))
    if t is None or x is None:
        return None
    found = _record.record_layers(t, specs, x, caches[0].stacks)
    if found is None:
        return None
    out, firsts = found
    rows: list[int] = []
    paths: list[str] = []
    for ns, cache, path, first in zip(layers, caches, scopes, firsts):
        rows += _neuron_rows(ns, first)
        paths += cache.neuron_paths(ns, path)
    t.mark_scopes(rows, paths, then)
    return out


def _bulk_inputs(x: Any, nin: int) -> list | None:
    """A layer's inputs as the bulk recorders take them (exact ints as floats), or None
    if they are not a list or tuple of ``nin`` items."""
    if not isinstance(x, (list, tuple)) or len(x) != nin:
        return None
    if type(x[0]) is not Value:
        return [_record.as_immediate(v) for v in x]
    return list(x)


def _open_npz(path: str, max_members: int) -> _npzfile.NpzReader:
    """The ``.npz`` at ``path`` with its member headers read (see :mod:`tapegrad._npzfile`),
    or a ValueError saying why it is unreadable."""
    def unreadable(kind: str, detail: str | None) -> str:
        why = {"archive": "not an .npz archive" + (f" ({detail})" if detail else ""),
               "npy": "it holds a single array (.npy), not an .npz archive",
               }.get(kind, f"cannot read its arrays ({detail})")
        return f"{path!r} is not a parameter file written by Module.save: {why}"

    return _npzfile.NpzReader(path, what="parameter file", max_members=max_members,
                              unreadable=unreadable)


_MAX_META_BYTES = 1 << 22     # the format and architecture strings (4 bytes a character)


def _read_meta(npz: _npzfile.NpzReader, path: str) -> tuple[dict[str, _npzfile.Header],
                                                            np.ndarray]:
    """(headers of the tensors, the architecture string) after checking the format."""
    found = dict(npz.headers)
    fmt, arch = found.pop(_META_FORMAT, None), found.pop(_META_ARCH, None)
    if fmt is None or arch is None or fmt.shape != () or arch.shape != ():
        raise ValueError(f"{path!r} is an .npz file but not one written by "
                         f"Module.save (no {_META_FORMAT!r}/{_META_ARCH!r} entries)")
    for key, head in ((_META_FORMAT, fmt), (_META_ARCH, arch)):
        if head.dtype.kind != "U" or head.nbytes > _MAX_META_BYTES:
            raise ValueError(f"{path!r}: {key!r} must be a text of at most "
                             f"{_MAX_META_BYTES // 4} characters, found {head.dtype}")
    if str(npz.read(_META_FORMAT)) != _FORMAT:
        raise ValueError(f"{path!r} has format {str(npz.read(_META_FORMAT))!r}; this "
                         f"tapegrad reads {_FORMAT!r}")
    return found, npz.read(_META_ARCH)


class Neuron(_Scoped):
    """``act(sum(w_i * x_i) + b)``: ReLU by default (micrograd), see ``nonlin``.

    The weights ``w`` are drawn from ``random.uniform(-1, 1)``; the bias ``b`` is 0.
    Calling the neuron on ``nin`` inputs (Values or numbers) returns a Value.

    Parameters
    ----------
    nin : int
        Number of inputs (>= 1).
    nonlin : bool or str, default True
        ``True`` or ``"relu"`` (micrograd's default), ``False`` or ``"linear"``,
        ``"tanh"``, ``"sigmoid"``. The attribute ``nonlin`` keeps micrograd's bool for
        ReLU (``True``) and linear (``False``) and holds ``"tanh"``/``"sigmoid"``
        otherwise; ``activation`` is always the name. Setting either changes the neuron.

    Raises
    ------
    TypeError
        If ``nin`` is not an int.
    ValueError
        If ``nin`` < 1 or ``nonlin`` is none of the above.

    Examples
    --------
    >>> from tapegrad.nn import Neuron
    >>> n = Neuron(3, nonlin="tanh")
    >>> n, n.nonlin, len(n.parameters())
    (TanhNeuron(3), 'tanh', 4)
    """

    def __init__(self, nin: int, nonlin: bool | str = True) -> None:
        _check_size(nin, "Neuron", "inputs")
        self.activation = nonlin      # validated before any weight is drawn
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.name = "neuron"          # scope of its rows; a Layer renames it neuron<j>

    @property
    def activation(self) -> str:
        """The activation's name: ``"relu"``, ``"linear"``, ``"tanh"`` or ``"sigmoid"``
        (settable, with any ``nonlin`` argument)."""
        return self._activation

    @activation.setter
    def activation(self, nonlin: bool | str) -> None:
        self._activation = _activation(nonlin)
        self._act = _APPLY[self._activation]

    @property
    def nonlin(self) -> bool | str:
        """micrograd's flag: ``True`` for ReLU, ``False`` for linear, else the name
        (settable, as :attr:`activation`)."""
        return {"relu": True, "linear": False}.get(self._activation, self._activation)

    @nonlin.setter
    def nonlin(self, nonlin: bool | str) -> None:
        self.activation = nonlin

    def __call__(self, x: Sequence[Value | float]) -> Value:
        w = self.w
        if not hasattr(x, "__len__"):
            raise TypeError(f"{self!r} takes a sequence of {len(w)} inputs (Values or numbers), "
                            f"got {x!r} ({type(x).__name__})")
        if len(x) != len(w):
            raise ValueError(f"{self!r} takes {len(w)} inputs, got {len(x)}")
        ident, sc = self._scoped
        with sc if ident == get_ident() else scope(self._name):
            act = sum(map(mul, w, x), self.b)   # b + w0*x0 + w1*x1 + ...: micrograd's order
            f = self._act
            return act if f is None else f(act)

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def tensors(self) -> Tensors:
        return {"w": ((len(self.w),), list(self.w)), "b": ((), [self.b])}

    def architecture(self) -> str:
        return f"Neuron({len(self.w)}, nonlin={self.activation!r})"

    def __repr__(self) -> str:
        return f"{_REPR_NAMES[self.activation]}Neuron({len(self.w)})"


class Layer(_Scoped):
    """``nout`` neurons reading the same inputs.

    Calling the layer returns a list of ``nout`` Values, or a bare Value when
    ``nout == 1`` (as micrograd).

    Parameters
    ----------
    nin : int
        Number of inputs of every neuron (>= 1).
    nout : int
        Number of neurons (>= 1).
    nonlin : bool or str, default True
        The neurons' activation (see :class:`Neuron`).

    Raises
    ------
    TypeError
        If ``nin`` or ``nout`` is not an int.
    ValueError
        If ``nin`` or ``nout`` < 1, or ``nonlin`` is not an activation.

    Examples
    --------
    >>> from tapegrad.nn import Layer
    >>> Layer(2, 3)
    Layer of [ReLUNeuron(2), ReLUNeuron(2), ReLUNeuron(2)]
    """

    def __init__(self, nin: int, nout: int, nonlin: bool | str = True) -> None:
        _check_size(nout, "Layer", "outputs")
        _activation(nonlin)            # fail before drawing any weight
        self.neurons = [Neuron(nin, nonlin=nonlin) for _ in range(nout)]
        self._bulk = _BulkCache()       # bulk recording: what it worked out last call
        for j, n in enumerate(self.neurons):
            n.name = f"neuron{j}"
        self.name = "layer"           # scope of its rows; an MLP renames it layer<i>

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        with self._scope():
            out = self._record_bulk(x)
            if out is None:
                out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def _record_bulk(self, x: Sequence[Value | float]) -> list[Value] | None:
        """The neurons' rows written with a few NumPy operations per layer call, the
        same rows (and scope marks) as calling each neuron; None when this layer must
        call its neurons: a small layer (the loop is faster), neurons of a subclass or
        of mixed activations or sizes, inputs that are not all Values of the current
        tape or all floats, and under ``detect_anomaly``."""
        specs = _bulk_specs([self.neurons], [self._bulk])
        if specs is None:
            return None
        layer = _context.state.scope          # this layer's scope, entered by __call__
        return _record_in_bulk([self.neurons], specs, [self._bulk], [layer], layer, x)

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def tensors(self) -> Tensors:
        """``W`` of shape ``(nout, nin)`` (row ``j`` is neuron ``j``'s ``w``) and ``b``."""
        ns = self.neurons
        return {"W": ((len(ns), len(ns[0].w)), [w for n in ns for w in n.w]),
                "b": ((len(ns),), [n.b for n in ns])}

    def architecture(self) -> str:
        acts = {n.activation for n in self.neurons}
        if len(acts) > 1 or len({len(n.w) for n in self.neurons}) > 1:
            return repr(self)
        return f"Layer({len(self.neurons[0].w)}, {len(self.neurons)}, nonlin={acts.pop()!r})"

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes ``nouts`` after ``nin`` inputs; the last layer is linear.

    Calling the MLP on ``nin`` inputs returns the last layer's output: a Value when its
    size is 1, else a list of Values. Layer ``i`` records its rows in scope
    ``"layer<i>"``.

    Parameters
    ----------
    nin : int
        Number of inputs (>= 1).
    nouts : sequence of int
        The size of each layer (each >= 1), e.g. ``[16, 16, 1]``.
    nonlin : bool or str, default "relu"
        The activation of the hidden layers (see :class:`Neuron`).

    Raises
    ------
    TypeError
        If ``nin`` or a size is not an int, or ``nouts`` is not a sequence.
    ValueError
        If ``nouts`` is empty, a size is < 1, or ``nonlin`` is not an activation.

    Examples
    --------
    >>> from tapegrad.nn import MLP
    >>> model = MLP(2, [16, 16, 1])
    >>> model.architecture(), len(model.parameters())
    ("MLP(2, [16, 16, 1], nonlin='relu')", 337)
    """

    def __init__(self, nin: int, nouts: Sequence[int], nonlin: bool | str = "relu") -> None:
        _check_size(nin, "MLP", "inputs")
        if not isinstance(nouts, Sequence) or isinstance(nouts, str):
            raise TypeError(f"MLP needs nouts, a list of layer sizes such as [16, 16, 1]; "
                            f"got {nouts!r} ({type(nouts).__name__})")
        nouts = list(nouts)
        if not nouts:
            raise ValueError("MLP needs at least one layer size in nouts, got []")
        for n in nouts:
            _check_size(n, "MLP", "outputs in every layer (nouts)")
        _activation(nonlin)
        sz = [nin] + nouts
        self.layers = [Layer(sz[i], sz[i + 1], nonlin=nonlin if i != len(nouts) - 1 else False)
                       for i in range(len(nouts))]
        for i, layer in enumerate(self.layers):
            layer.name = f"layer{i}"
        self._bulk: list[_BulkCache] = []     # bulk recording, per layer (see Layer)

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        out = self._record_bulk(x)
        if out is None:
            for layer in self.layers:
                x = layer(x)
            return x
        return out[0] if len(out) == 1 else out

    def _record_bulk(self, x: Sequence[Value | float]) -> list[Value] | None:
        """Every layer's rows in one go (:func:`_record.record_layers`), the same rows
        and scope marks as calling the layers; None when some layer must be called
        (see :meth:`Layer._record_bulk`)."""
        if any(type(layer) is not Layer for layer in self.layers):
            return None                 # a layer of the user's own: its __call__ runs
        if len(self._bulk) != len(self.layers):
            self._bulk = [_BulkCache() for _ in self.layers]
        layers = [layer.neurons for layer in self.layers]
        specs = _bulk_specs(layers, self._bulk)
        if specs is None:
            return None
        outer = _context.state.scope
        scopes = [f"{outer}/{layer.name}" if outer else layer.name for layer in self.layers]
        return _record_in_bulk(layers, specs, self._bulk, scopes, outer, x)

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def tensors(self) -> Tensors:
        """``layer<i>/W`` and ``layer<i>/b`` for every layer."""
        return {f"layer{i}/{k}": t for i, layer in enumerate(self.layers)
                for k, t in layer.tensors().items()}

    def architecture(self) -> str:
        """``"MLP(2, [16, 16, 1], nonlin='relu')"`` (the repr if the layers were changed)."""
        ns = [layer.neurons for layer in self.layers]
        acts = {n.activation for layer in ns[:-1] for n in layer}
        sizes = [len(ns[0][0].w)] + [len(layer) for layer in ns]
        regular = (len(acts) <= 1 and all(n.activation == "linear" for n in ns[-1])
                   and all(len(n.w) == sizes[i] for i, layer in enumerate(ns) for n in layer))
        if not regular:
            return repr(self)
        hidden = f", nonlin={acts.pop()!r}" if acts else ""
        return f"MLP({sizes[0]}, {sizes[1:]}{hidden})"

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
