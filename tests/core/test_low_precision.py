"""float16 / bfloat16: computed in float32, state in float32, rounded once, never NaN."""

from __future__ import annotations

import numpy as np
import pytest

import padam_core
from tests.conftest import to_numpy
from tests.core.helpers import dtype_of, rounded
from tests.oracle import Config, gradient_sequence, oracle_trajectory

LOW_PRECISION = ["float16", "bfloat16"]


MANTISSA_BITS = {"float16": 10, "bfloat16": 7}


def _ulp_distance(actual: np.ndarray, exact: np.ndarray, dtype_name: str) -> np.ndarray:
    """|actual - exact| in units of the last place of ``dtype_name`` at ``exact``."""
    exponent = np.floor(np.log2(np.maximum(np.abs(exact), np.finfo(np.float32).tiny)))
    return np.abs(actual - exact) / 2.0 ** (exponent - MANTISSA_BITS[dtype_name])


@pytest.mark.parametrize("variant", padam_core.VARIANTS)
@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
def test_one_step_is_float32_result_rounded_once(xp, dtype_name, variant):
    dtype = dtype_of(xp, dtype_name)
    rng = np.random.default_rng(0)
    theta0 = rounded(xp, rng.normal(size=64), dtype)
    grad = rounded(xp, rng.normal(size=64), dtype)
    config = Config(variant=variant, weight_decay=0.01)
    state = padam_core.init(xp.asarray(theta0, dtype=dtype))
    assert state.exp_avg.dtype == xp.float32 and state.exp_avg_sq.dtype == xp.float32
    new = padam_core.padam_step(
        xp.asarray(theta0, dtype=dtype), xp.asarray(grad, dtype=dtype),
        state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq, 1, **config.kwargs(),
    )  # fmt: skip
    assert new.param.dtype == dtype
    assert new.exp_avg.dtype == xp.float32 and new.max_exp_avg_sq.dtype == xp.float32
    exact = oracle_trajectory(theta0, [grad], config)[0]
    actual = to_numpy(new.param).astype(np.float64)
    assert np.max(_ulp_distance(actual, exact, dtype_name)) <= 1.0


@pytest.mark.parametrize("variant", padam_core.VARIANTS)
@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
def test_hundred_steps_with_zero_gradients_never_nan(xp, dtype_name, variant):
    dtype = dtype_of(xp, dtype_name)
    grads = gradient_sequence((32,), 100, seed=2, kind="noisy")
    grads[:10] = [np.zeros(32)] * 10  # eps = 1e-8 underflows to 0 in float16: must not matter
    param = xp.asarray(np.ones(32), dtype=dtype)
    state = padam_core.init(param)
    for grad in grads:
        param, state = padam_core.update(
            xp.asarray(grad, dtype=dtype), state, param, variant=variant, weight_decay=1e-4
        )
        values = to_numpy(param)
        assert np.all(np.isfinite(values)), f"non-finite parameter at step {state.count}"
        for moment in (state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq):
            assert np.all(np.isfinite(to_numpy(moment)))


def test_float16_zero_gradient_gives_no_nan_even_without_state_upcast():
    # A user who keeps float16 state still gets float32 arithmetic inside the step.
    param = np.ones(4, dtype=np.float16)
    zeros = np.zeros(4, dtype=np.float16)
    new = padam_core.padam_step(param, zeros, zeros, zeros, zeros, 1)
    assert new.param.dtype == np.float16 and new.exp_avg.dtype == np.float16
    np.testing.assert_array_equal(new.param, param)
