"""Keras tests: one Keras backend per process (``KERAS_BACKEND=tensorflow|jax|torch pytest
tests/keras``). Tests that need one backend skip on the others with the reason.

JAX float64 is not enabled here (Keras picks its own dtypes; the root conftest leaves x64 off
when ``KERAS_BACKEND`` is set), so float64 cases run on TensorFlow and torch and skip on JAX.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
keras = pytest.importorskip("keras")

if keras.backend.backend() == "torch":
    import torch

    # These tests use tiny tensors: with several intra-op threads on a busy 2-core machine,
    # torch spends ~20x longer in thread hand-offs than in arithmetic.
    torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    # Keras's convert_to_numpy calls np.array(x) on backend tensors: NumPy 2 warns, harmlessly.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    )
    # torch.compile (jit_compile=True on the torch backend) uses a deprecated torch.jit helper.
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
    )


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Seed every test the same way and restore the global dtype policy after it."""
    import keras

    keras.utils.set_random_seed(0)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
