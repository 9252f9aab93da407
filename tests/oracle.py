"""The float64 oracle: docs/numerics.md's update written as a naive loop over Python numbers.

It never imports padam_core: it is what the kernel and every adapter are checked against. Each
element is updated on its own with Python floats (or complex numbers), exactly in the order
docs/numerics.md lists the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Config:
    """Hyperparameters in the core's names (docs/numerics.md's defaults)."""

    lr: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    partial: float | Callable[[int], float] = 0.125  # a number or a schedule of the 1-based t
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    amsgrad: bool = True
    maximize: bool = False
    variant: str = "reference"

    def kwargs(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OracleState:
    m: list = field(default_factory=list)
    v: list = field(default_factory=list)
    v_hat: list = field(default_factory=list)


def oracle_trajectory(
    theta0: np.ndarray, grads: Sequence[np.ndarray], config: Config
) -> list[np.ndarray]:
    """The parameter after each step 1..len(grads), in float64 (complex128 for complex input)."""
    c = config
    shape = theta0.shape
    theta = [complex(x) if np.iscomplexobj(theta0) else float(x) for x in theta0.reshape(-1)]
    n = len(theta)
    m, v, v_hat = [0.0] * n, [0.0] * n, [0.0] * n
    trajectory = []
    for t, grad in enumerate(grads, start=1):
        flat_grad = grad.reshape(-1).tolist()
        bc1 = 1.0 - c.b1**t
        bc2 = 1.0 - c.b2**t
        p = float(c.partial(t)) if callable(c.partial) else c.partial
        for i in range(n):
            g = flat_grad[i]
            if c.maximize:
                g = -g
            if c.decoupled_weight_decay:
                theta[i] = theta[i] * (1.0 - c.lr * c.weight_decay)
            else:
                g = g + c.weight_decay * theta[i]
            m[i] = c.b1 * m[i] + (1.0 - c.b1) * g
            v[i] = c.b2 * v[i] + (1.0 - c.b2) * (g.real**2 + g.imag**2)
            if c.variant == "reference":
                v_hat[i] = max(v_hat[i], v[i]) if c.amsgrad else v[i]
                denominator = (math.sqrt(v_hat[i]) + c.eps) ** (2.0 * p)
                theta[i] = theta[i] - c.lr * math.sqrt(bc2) / bc1 * m[i] / denominator
            elif c.variant == "torch":
                v_hat[i] = max(v_hat[i], v[i]) if c.amsgrad else v[i]
                denominator = (v_hat[i] / bc2) ** p + c.eps
                theta[i] = theta[i] - c.lr / bc1 * m[i] / denominator
            elif c.variant == "optax":
                v_hat[i] = max(v_hat[i], v[i] / bc2) if c.amsgrad else v[i] / bc2
                denominator = v_hat[i] ** p + c.eps
                theta[i] = theta[i] - c.lr * (m[i] / bc1) / denominator
            else:
                raise ValueError(c.variant)
        trajectory.append(np.asarray(theta).reshape(shape))
    return trajectory


def gradient_sequence(
    shape: tuple[int, ...], steps: int, *, seed: int, kind: str = "spiky"
) -> list[np.ndarray]:
    """Gradients for a trajectory test, in float64.

    ``spiky``: a large first gradient, then small noisy ones (separates the torch-style and
    optax-style running max). ``constant``: the same gradient every step (does not).
    ``noisy``: Gaussian noise around a slowly drifting mean, with some exact zeros.
    """
    rng = np.random.default_rng(seed)
    if kind == "constant":
        g = rng.normal(size=shape)
        return [g.copy() for _ in range(steps)]
    if kind == "spiky":
        first = 10.0 * rng.normal(size=shape)
        return [first] + [0.1 * rng.normal(size=shape) for _ in range(steps - 1)]
    if kind == "noisy":
        mean = rng.normal(size=shape)
        grads = []
        for t in range(steps):
            g = mean * math.cos(t / 10.0) + 0.5 * rng.normal(size=shape)
            grads.append(np.where(rng.random(size=shape) < 0.1, 0.0, g))
        return grads
    raise ValueError(kind)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """numerics.md's measure, max|x - ref| / max|ref| over the whole tensor (0 if empty)."""
    actual = np.asarray(actual, dtype=np.result_type(actual, np.float64))
    expected = np.asarray(expected, dtype=np.result_type(expected, np.float64))
    if expected.size == 0:
        return 0.0
    scale = np.max(np.abs(expected))
    difference = np.max(np.abs(actual - expected))
    return float(difference / scale) if scale > 0 else float(difference)
