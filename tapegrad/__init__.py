"""tapegrad: micrograd's API on a NumPy tape.

Every scalar op is one row of a structure-of-arrays tape; ``backward()`` is a
vectorized reverse sweep over integer opcodes.
"""

from ._dask import WORKER_ENV as DASK_WORKER_ENV
from ._kernels import kernels, set_kernels
from ._plan import GuardError
from .derivatives import grad
from .engine import Value
from .function import Function
from .functions import (
    atan2,
    clip,
    defop,
    dot,
    expm1,
    heaviside,
    leaky_relu,
    log1p,
    maximum,
    minimum,
)
from .functions import sum as sum  # tapegrad.sum, kept out of __all__
from .profiler import profile
from .tape import ResetTapeError, Tape, current_tape, detect_anomaly, scope

__all__ = ["Value", "Tape", "Function", "current_tape", "scope", "detect_anomaly", "profile",
           "ResetTapeError", "GuardError", "defop", "atan2", "log1p", "expm1", "leaky_relu",
           "maximum", "minimum", "clip", "heaviside", "dot", "grad", "DASK_WORKER_ENV", "kernels",
           "set_kernels"]
__version__ = "0.1.0"
