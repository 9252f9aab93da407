"""padam_keras against padam_torch and padam_jax: one set of hyperparameters, one trajectory.

The same float32 problems as tests/conformance/test_cross_framework.py, run by Keras on the
backend of this process, then by torch and optax in the same process; numerics.md's 1e-5 applies.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from padam_keras import Padam
from tests.conformance import frameworks
from tests.conformance.test_cross_framework import CASES, STEPS, case_id
from tests.keras.keras_testing import run_optimizer
from tests.oracle import Config, gradient_sequence, relative_error


@pytest.fixture(scope="module")
def problem():
    theta0 = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32).astype(np.float64)
    grads = [g.astype(np.float32).astype(np.float64)
             for g in gradient_sequence((4, 6), STEPS, seed=7, kind="spiky")]  # fmt: skip
    return theta0, grads


def run_keras(theta0: np.ndarray, grads: list[np.ndarray], config: Config) -> np.ndarray:
    decay = (
        {"weight_decay": config.weight_decay}  # Keras's own argument is the decoupled form
        if config.decoupled_weight_decay
        else {"l2_weight_decay": config.weight_decay}
    )
    optimizer = Padam(learning_rate=config.lr, beta_1=config.b1, beta_2=config.b2,
                      epsilon=config.eps, partial=config.partial, amsgrad=config.amsgrad,
                      maximize=config.maximize, variant=config.variant, **decay)  # fmt: skip
    variable = keras.Variable(theta0.astype(np.float32), dtype="float32")
    (final,) = run_optimizer(optimizer, [variable], [[g.astype(np.float32)] for g in grads])
    return final.astype(np.float64)


@pytest.mark.parametrize("config", CASES, ids=case_id)
def test_keras_matches_torch_and_jax(problem, config):
    pytest.importorskip("torch")
    pytest.importorskip("optax")
    theta0, grads = problem
    ours = run_keras(theta0, grads, config)
    for name, run in (("padam_torch", frameworks.run_torch), ("padam_jax", frameworks.run_jax)):
        theirs = run(theta0, grads, config)[-1]
        error = relative_error(ours, theirs)
        assert error <= 1e-5, f"padam_keras ({keras.backend.backend()}) vs {name}: {error:.3g}"
