"""The project's promise: one set of hyperparameters, one trajectory, in every framework.

docs/numerics.md: two frameworks given the same float32 inputs and hyperparameters agree within 1e-5
(max|x - ref| / max|ref|) after 100 steps. Here: padam_core (NumPy), padam_torch (single-tensor
and foreach) and padam_jax (optax, jitted); padam_keras is held to the same runs in
tests/keras/test_keras_cross_framework.py, once per Keras backend.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import padam_core
from tests.conformance import frameworks
from tests.oracle import Config, gradient_sequence

STEPS = 100
CASES = [
    Config(lr=0.05, variant=variant, amsgrad=amsgrad, partial=partial, **decay)
    for variant, amsgrad, partial, decay in itertools.product(
        padam_core.VARIANTS,
        (True, False),
        (0.125, 0.3),
        ({"weight_decay": 0.01}, {"weight_decay": 0.01, "decoupled_weight_decay": True}),
    )
]


def case_id(config: Config) -> str:
    mode = "decoupled" if config.decoupled_weight_decay else "l2"
    return f"{config.variant}-ams{int(config.amsgrad)}-p{config.partial}-{mode}"


@pytest.fixture(scope="module")
def problem():
    theta0 = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32).astype(np.float64)
    grads = [g.astype(np.float32).astype(np.float64)
             for g in gradient_sequence((4, 6), STEPS, seed=7, kind="spiky")]  # fmt: skip
    return theta0, grads


@pytest.mark.parametrize("config", CASES, ids=case_id)
def test_every_framework_gives_the_same_trajectory(problem, config):
    pytest.importorskip("torch")
    pytest.importorskip("optax")
    theta0, grads = problem
    frameworks.assert_one_trajectory(theta0, grads, config)
