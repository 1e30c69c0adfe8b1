"""Which kernels run the backward's sequential accumulation: ``"numpy"`` (the default,
level groups and folded chains, :class:`tapegrad._plan.Backward`) or ``"numba"`` (one
compiled pass over the rows; the optional extra ``tapegrad[numba]``).

The choice is process-wide. It starts from the environment variable
``TAPEGRAD_KERNELS`` (unset: ``"numpy"``; an unknown name, or ``numba`` without numba
installed, fails at ``import tapegrad``); :func:`set_kernels` changes it. numba is
imported, and its kernels loaded or compiled, only when first needed.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable

__all__ = ["KERNELS", "ENV", "kernels", "set_kernels", "compiled_sweep"]

KERNELS = ("numpy", "numba")
ENV = "TAPEGRAD_KERNELS"

_lock = threading.Lock()
_NOT_LOADED = object()


def _checked(name: object, where: str) -> str:
    if not isinstance(name, str) or name not in KERNELS:
        raise ValueError(f"{where}: unknown kernels {name!r}; choose one of {KERNELS}")
    return name


def _install_hint(why: object) -> ImportError:
    return ImportError(
        f"tapegrad's numba kernels need numba ({why}); install them with "
        "pip install \"tapegrad[numba]\", or use set_kernels(\"numpy\")")


_name = _checked(os.environ.get(ENV) or "numpy", f"environment variable {ENV}")
if _name == "numba" and importlib.util.find_spec("numba") is None:   # fail at import
    raise _install_hint(f"environment variable {ENV}=numba, but numba is not installed")
_sweep: object = None if _name == "numpy" else _NOT_LOADED


def kernels() -> str:
    """The kernels in use: ``"numpy"`` or ``"numba"``."""
    return _name


def set_kernels(name: str) -> str:
    """Run backward sweeps with ``name`` (one of :data:`KERNELS`); returns the previous.

    ``"numba"`` imports numba and loads its compiled loops now (about a second; the
    first time on a machine it compiles and caches them, about five seconds), so the
    first backward after it does not pay for that. The choice applies to every thread;
    sweeps already running finish on the kernels they started with.

    Raises
    ------
    ValueError
        For a name that is not one of :data:`KERNELS`.
    ImportError
        For ``"numba"`` when numba is not installed (``pip install "tapegrad[numba]"``).
    """
    global _name, _sweep
    name = _checked(name, "set_kernels")
    with _lock:
        previous = _name
        kernel = _load() if name == "numba" else None
        _name, _sweep = name, kernel
    return previous


def compiled_sweep() -> Callable | None:
    """The compiled sweep (:func:`tapegrad._numba_kernels.reverse_sweep`) when the numba
    kernels are selected, else None."""
    global _sweep
    kernel = _sweep
    if kernel is _NOT_LOADED:               # selected by the environment variable
        with _lock:
            if _sweep is _NOT_LOADED:
                _sweep = _load()
            kernel = _sweep
    return kernel  # type: ignore[return-value]


def _load() -> Callable:
    try:
        from . import _numba_kernels
    except ImportError as e:
        raise _install_hint(e) from e
    return _numba_kernels.reverse_sweep
