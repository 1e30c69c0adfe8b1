"""Optimizers for lists of :class:`tapegrad.Value` parameters: SGD and Adam.

Each ``step()`` gathers the parameters' data and gradients into NumPy arrays,
applies the update to all of them at once (PyTorch's rules, see each class) and
writes the data back::

    opt = SGD(model.parameters(), lr=1.0)
    for k in range(100):
        loss = ...
        opt.zero_grad()
        loss.backward()
        opt.lr = 1.0 - 0.9 * k / 100     # lr is a plain, writable attribute
        opt.step()

``SGD`` with ``momentum=0`` and ``weight_decay=0`` computes ``p - lr * grad`` with
the same float64 operations as micrograd's ``p.data -= lr * p.grad`` loop, so it
reproduces that loop bit for bit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

from .engine import Value
from .nn import Module

__all__ = ["Optimizer", "SGD", "Adam"]


def _real(x: object, name: str) -> float:
    """``x`` as a finite float, or a TypeError/ValueError naming ``name``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {x!r} ({type(x).__name__})")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


def _in_range(x: object, name: str, low: float, high: float | None = None,
              high_open: bool = True) -> float:
    """``x`` as a float in ``[low, high)`` (``[low, high]`` if not ``high_open``)."""
    x = _real(x, name)
    too_high = high is not None and (x >= high if high_open else x > high)
    if x < low or too_high:
        bound = "" if high is None else f", {high:g}{')' if high_open else ']'}"
        where = f"in [{low:g}{bound}" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {where}, got {x!r}")
    return x


class Optimizer:
    """Base class: holds the parameters, ``lr``, ``zero_grad()`` and the gather/scatter.

    Subclasses implement ``_update(p, g)``, the new parameter values from the current
    ones and their gradients (float64 arrays).

    Parameters
    ----------
    params : iterable of Value
        The Values to optimize, e.g. ``model.parameters()`` (the iterable is read
        once, into a list; each Value at most once).
    lr : float
        The learning rate, a finite number >= 0; can be changed between steps.

    Raises
    ------
    TypeError
        If ``params`` is a single Value, a Module, not iterable, or holds something
        other than Values, or ``lr`` is not a real number.
    ValueError
        If ``params`` is empty or repeats a Value, or ``lr`` is negative or not finite.
    """

    def __init__(self, params: Iterable[Value], lr: float) -> None:
        if isinstance(params, Value):
            raise TypeError("params must be an iterable of Values, got a single Value: "
                            "wrap it in a list")
        if isinstance(params, Module):
            raise TypeError("params must be an iterable of Values, got a Module: "
                            "pass model.parameters()")
        try:
            self.params: list[Value] = list(params)
        except TypeError:
            raise TypeError(f"params must be an iterable of Values, got "
                            f"{type(params).__name__}") from None
        if not self.params:
            raise ValueError("params is empty: the optimizer has nothing to update")
        seen: set[int] = set()
        for i, p in enumerate(self.params):
            if not isinstance(p, Value):
                raise TypeError(f"params[{i}] must be a tapegrad Value, got {p!r} "
                                f"({type(p).__name__})")
            if id(p) in seen:
                raise ValueError(f"params[{i}] appears more than once in params")
            seen.add(id(p))
        self.lr = lr
        self.steps = 0
        """Number of ``step()`` calls so far."""

    @property
    def lr(self) -> float:
        """The learning rate, a float >= 0; set it between steps for a schedule."""
        return self._lr

    @lr.setter
    def lr(self, lr: float) -> None:
        self._lr = _in_range(lr, "lr", 0.0)

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to 0."""
        for p in self.params:
            p.grad = 0.0

    def step(self) -> None:
        """Update every parameter from its current gradient.

        Gathers the data and gradients into float64 arrays, applies the update to all
        of them at once and writes the data back; :attr:`steps` counts the calls.
        """
        params = self.params
        n = len(params)
        p = np.fromiter([v.data for v in params], np.float64, n)
        g = np.fromiter([v.grad for v in params], np.float64, n)
        self.steps += 1
        new = self._update(p, g)
        for v, x in zip(params, new.tolist()):
            v.data = x

    def _update(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The new parameter values from the current ones and their gradients."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.params)} params, {self._hyper()})"

    def _hyper(self) -> str:
        return f"lr={self._lr:g}"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    PyTorch's rule (``dampening=0``, no Nesterov), for each parameter ``p``::

        g = grad + weight_decay * p
        v = momentum * v + g          # v starts at 0, so the first v is g
        p = p - lr * v

    With ``momentum == 0`` the velocity is skipped: ``p = p - lr * g``, which is
    micrograd's ``p.data -= lr * p.grad`` bit for bit when ``weight_decay == 0``.

    Parameters
    ----------
    params : iterable of Value
        The Values to optimize (see :class:`Optimizer`).
    lr : float
        Learning rate (>= 0).
    momentum : float, default 0.0
        In ``[0, 1)``.
    weight_decay : float, default 0.0
        L2 penalty coefficient (>= 0), added to the gradient.

    Raises
    ------
    TypeError
        If an argument is not of the type above.
    ValueError
        If a number is out of its range or not finite, or ``params`` is empty or
        repeats a Value.

    Examples
    --------
    >>> from tapegrad import Value
    >>> from tapegrad.optim import SGD
    >>> w = Value(1.0)
    >>> opt = SGD([w], lr=0.1)
    >>> (w * w).backward()
    >>> opt.step()
    >>> w.data
    0.8
    """

    def __init__(self, params: Iterable[Value], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.momentum = _in_range(momentum, "momentum", 0.0, 1.0)
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0)
        self.velocity = np.zeros(len(self.params))
        """The momentum buffer ``v`` (zeros until the first step)."""

    def _update(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            v = self.velocity
            v *= self.momentum
            v += g
            g = v
        return p - self.lr * g

    def _hyper(self) -> str:
        return (f"lr={self.lr:g}, momentum={self.momentum:g}, "
                f"weight_decay={self.weight_decay:g}")


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and optional L2 weight decay.

    PyTorch's rule (``amsgrad=False``; the decay is added to the gradient, as in
    ``torch.optim.Adam``, not decoupled as in AdamW). At step ``t = 1, 2, ...``::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g            # m, v start at 0
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    which is ``p - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - beta1**t)``
    and ``v_hat = v / (1 - beta2**t)``, evaluated in PyTorch's order.

    Parameters
    ----------
    params : iterable of Value
        The Values to optimize (see :class:`Optimizer`).
    lr : float, default 1e-3
        Learning rate (>= 0).
    betas : tuple of float, default (0.9, 0.999)
        ``(beta1, beta2)``, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator (> 0).
    weight_decay : float, default 0.0
        L2 penalty coefficient (>= 0), added to the gradient.

    Raises
    ------
    TypeError
        If an argument is not of the type above (``betas`` must be a pair).
    ValueError
        If a number is out of its range or not finite, or ``params`` is empty or
        repeats a Value.
    """

    def __init__(self, params: Iterable[Value], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_in_range(betas[0], "betas[0]", 0.0, 1.0),
                      _in_range(betas[1], "betas[1]", 0.0, 1.0))
        self.eps = _real(eps, "eps")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0)
        n = len(self.params)
        self.m = np.zeros(n)
        """First-moment estimate (exponential average of the gradients)."""
        self.v = np.zeros(n)
        """Second-moment estimate (exponential average of the squared gradients)."""

    def _update(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        beta1, beta2 = self.betas
        t = self.steps
        if self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self.m, self.v
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        step_size = self.lr / (1 - beta1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + self.eps
        return p - step_size * (m / denom)

    def _hyper(self) -> str:
        return (f"lr={self.lr:g}, betas=({self.betas[0]:g}, {self.betas[1]:g}), "
                f"eps={self.eps:g}, weight_decay={self.weight_decay:g}")
