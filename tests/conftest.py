"""Shared test fixtures: the scipy-style ``xp`` fixture over every array namespace.

``PADAM_TEST_NAMESPACES`` narrows it, e.g. ``PADAM_TEST_NAMESPACES=numpy,torch pytest``. CuPy is
tried only when a GPU answers; otherwise it is skipped with the reason.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

# JAX float64 for the float64 oracle comparisons. Not in Keras runs: Keras picks its own dtypes,
# and each Keras backend runs in its own process (see .ci/run).
if "KERAS_BACKEND" not in os.environ:
    os.environ.setdefault("JAX_ENABLE_X64", "1")

ALL_NAMESPACES = ("numpy", "array_api_strict", "torch", "jax.numpy", "cupy")


def _load_namespace(name: str) -> Any:
    """The array-API namespace for ``name``, or ``pytest.skip`` with the reason."""
    if name == "numpy":
        import array_api_compat.numpy as xp
    elif name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict")
    elif name == "torch":
        pytest.importorskip("torch")
        import array_api_compat.torch as xp
    elif name == "jax.numpy":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as xp
    elif name == "cupy":
        cupy = pytest.importorskip("cupy")
        try:
            cupy.zeros(1).sum()
        except Exception as error:  # no GPU or no driver
            pytest.skip(f"CuPy cannot run here: {type(error).__name__}: {error}")
        xp = importlib.import_module("array_api_compat.cupy")
    else:
        raise ValueError(name)
    return xp


def _selected_namespaces() -> list[str]:
    wanted = os.environ.get("PADAM_TEST_NAMESPACES")
    if not wanted:
        return list(ALL_NAMESPACES)
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = set(names) - set(ALL_NAMESPACES)
    if unknown:
        raise ValueError(f"PADAM_TEST_NAMESPACES names unknown namespaces: {sorted(unknown)}")
    return names


@pytest.fixture(params=_selected_namespaces())
def xp(request: pytest.FixtureRequest) -> Any:
    """Each array namespace in turn (scipy's convention)."""
    return _load_namespace(request.param)


def to_numpy(array: Any) -> np.ndarray:
    """A float64/complex128-or-original-dtype NumPy copy of any namespace's array."""
    module = type(array).__module__
    if module.startswith("torch"):
        array = array.detach().cpu()
        if str(array.dtype) == "torch.bfloat16":
            array = array.float()
        return array.numpy().copy()
    if module.startswith("cupy"):
        return array.get()
    if module.startswith("array_api_strict"):
        # The wrapped NumPy array: array_api_strict refuses __array__ off its default device.
        return np.array(array._array, copy=True)
    return np.array(array, copy=True)


@pytest.fixture
def numpy_of() -> Callable[[Any], np.ndarray]:
    return to_numpy
