"""Issue 11: a scheduled ``partial`` gives one trajectory in every framework.

Each built-in schedule of padam_core.schedules, from the same float32 inputs, in padam_core,
padam_torch (fused and foreach) and padam_jax (jitted, p evaluated on the traced count): all
within docs/numerics.md's cross-framework tolerance (1e-5) of each other and of the float64
oracle, which evaluates the schedule at each 1-based step itself. padam_keras runs the same
cases in tests/keras (once per backend).
"""

from __future__ import annotations

import numpy as np
import pytest

from padam_core import schedules
from tests.conformance import frameworks
from tests.oracle import Config, gradient_sequence

STEPS = 60
SCHEDULES = {
    "constant": schedules.constant(0.3),
    "linear": schedules.linear(0.5, 0.125, steps=40),
    "cosine": schedules.cosine(0.5, 0.0, steps=50),
    "piecewise": schedules.piecewise([10, 30], [0.5, 0.25, 0.125]),
}


@pytest.fixture(scope="module")
def problem():
    theta0 = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32).astype(np.float64)
    grads = [g.astype(np.float32).astype(np.float64)
             for g in gradient_sequence((5, 3), STEPS, seed=11, kind="spiky")]  # fmt: skip
    return theta0, grads


@pytest.mark.parametrize("variant", ["torch", "reference"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_scheduled_partial_is_one_trajectory(problem, name: str, variant: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("optax")
    theta0, grads = problem
    config = Config(lr=0.05, partial=SCHEDULES[name], variant=variant, weight_decay=0.01)
    frameworks.assert_one_trajectory(theta0, grads, config)
