"""Helpers shared by the core tests: run the kernel over a gradient sequence on any namespace."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import padam_core
from tests.conftest import to_numpy
from tests.oracle import Config

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def dtype_of(xp: Any, name: str) -> Any:
    """The namespace's dtype called ``name``, or skip when it has none (bfloat16 on NumPy...)."""
    dtype = getattr(xp, name, None)
    if dtype is None and name == "bfloat16" and xp.__name__.endswith("torch"):
        import torch

        dtype = torch.bfloat16
    if dtype is None:
        pytest.skip(f"{xp.__name__} has no {name}")
    return dtype


def rounded(xp: Any, array: np.ndarray, dtype: Any) -> np.ndarray:
    """``array`` rounded to ``dtype`` the way ``xp`` rounds it, back in float64."""
    return to_numpy(xp.asarray(array, dtype=dtype)).astype(np.float64)


def run_kernel(
    xp: Any, theta0: np.ndarray, grads: list[np.ndarray], config: Config, dtype: Any
) -> list[np.ndarray]:
    """The kernel's parameter after each step, as NumPy arrays."""
    param = xp.asarray(theta0, dtype=dtype)
    state = padam_core.init(param, amsgrad=config.amsgrad)
    m, v, v_max = state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq
    trajectory = []
    for t, grad in enumerate(grads, start=1):
        g = xp.asarray(grad, dtype=dtype)
        param, m, v, v_max = padam_core.padam_step(param, g, m, v, v_max, t, **config.kwargs())
        trajectory.append(to_numpy(param))
    return trajectory
