"""The cheap general power: the fused kernel's exp2/log2 polynomials and the array kernel's
``exp(2p log x)`` for an array ``partial``, against mpmath, with 0, inf, NaN and p = 0 exact."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import padam_core
from padam_core import fused_cpu
from tests.conftest import to_numpy
from tests.core.helpers import TOLERANCE, run_kernel
from tests.oracle import Config, gradient_sequence, oracle_trajectory, relative_error

mpmath = pytest.importorskip("mpmath")

# Exponents y = 2p of the kernel (p in (0, 1/2]): general ones, the ends, and chain values.
EXPONENTS = (0.6, 0.02, 1e-6, 0.25000001, 0.999, 1.0, 0.5)


def _exact_power(values: np.ndarray, exponent: float) -> list:
    """values ** exponent in 200-bit arithmetic (mpmath numbers), for positive finite values."""
    with mpmath.workprec(200):
        y = mpmath.mpf(float(exponent))
        return [mpmath.mpf(float(x)) ** y for x in values]


def _ulps(ours: np.ndarray, exact: list, dtype: type) -> float:
    """The largest distance |ours - exact| in ulps of ``dtype`` at the exact value."""
    worst = 0.0
    info = np.finfo(dtype)
    for value, reference in zip(ours.tolist(), exact, strict=True):
        # The ulp at the exact value: 2^(exponent - mantissa bits), at least the subnormal step.
        exponent = int(mpmath.floor(mpmath.log(reference, 2))) if reference > 0 else info.minexp
        ulp = mpmath.mpf(2) ** (max(exponent, info.minexp) - info.nmant)
        worst = max(worst, float(abs(mpmath.mpf(value) - reference) / ulp))
    return worst


def _log_uniform(dtype: type, count: int, seed: int) -> np.ndarray:
    """Positive finite values of ``dtype`` spread over its whole range, subnormals included."""
    info = np.finfo(dtype)
    smallest = float(info.smallest_subnormal)
    exponents = np.random.default_rng(seed).uniform(np.log2(smallest), np.log2(info.max), count)
    values = np.exp2(exponents).astype(dtype)
    edges = [smallest, float(info.smallest_normal), float(info.max), 1.0, 2.0, 0.5]
    values = np.concatenate([values, np.asarray(edges, dtype=dtype)])
    return values[(values > 0) & np.isfinite(values)]


needs_numba = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_general_power_is_within_three_ulps_everywhere(dtype):
    values = _log_uniform(dtype, 3000, seed=1)
    subnormal = values < np.finfo(dtype).smallest_normal
    assert subnormal.sum() >= 10  # the range really includes subnormal inputs
    for exponent in EXPONENTS:
        y = dtype(exponent)
        ours = fused_cpu._loop.general_power_array(values, y)
        assert ours.dtype == dtype
        # Measured: at most 1.3 ulps in float32, 2.0 in float64, against exact values.
        assert _ulps(ours, _exact_power(values, y), dtype) <= 3.0, exponent


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_general_power_keeps_zero_inf_nan_and_one(dtype):
    values = np.asarray([0.0, np.inf, np.nan, 1.0, -0.0], dtype=dtype)
    for exponent in (0.6, 1e-6, 1.0):
        ours = fused_cpu._loop.general_power_array(values, dtype(exponent))
        np.testing.assert_array_equal(ours[:4], np.asarray([0.0, np.inf, np.nan, 1.0], dtype))


@needs_numba
@pytest.mark.parametrize("partial", [0.3, 0.01, 0.49])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_general_power_step_matches_oracle(dtype, partial):
    """A whole trajectory through the fused path at a general p stays in SPEC's tolerance."""
    for variant in padam_core.VARIANTS:
        config = Config(variant=variant, partial=partial, lr=0.01)
        grads = gradient_sequence((64,), 100, seed=3, kind="noisy")
        theta0 = np.random.default_rng(4).normal(size=64)
        expected = oracle_trajectory(theta0, grads, config)[-1]
        param = theta0.astype(dtype)
        state = padam_core.init(param)
        m, v, v_hat = state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq
        for t, grad in enumerate(grads, start=1):
            fused_cpu.multi_tensor_step(
                [param], [grad.astype(dtype)], [m], [v], [v_hat], t,
                **config.kwargs(),
            )  # fmt: skip
        assert relative_error(param, expected) <= TOLERANCE[np.dtype(dtype).name], variant


# ---- the array kernel, array partial: exp(2p * log(root)) ----------------------------------


def _partial_array(xp, value, dtype):
    return xp.asarray(value, dtype=dtype)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_array_partial_power_special_values(xp, dtype_name):
    dtype = getattr(xp, dtype_name)
    roots = xp.asarray([0.0, np.inf, np.nan, 1.0, 4.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log(0) warning from NumPy: zeros are selected
        general = to_numpy(padam_core.partial_power(roots, _partial_array(xp, 0.25, dtype), xp=xp))
        zero = to_numpy(padam_core.partial_power(roots, _partial_array(xp, 0.0, dtype), xp=xp))
    np.testing.assert_array_equal(general[:4], [0.0, np.inf, np.nan, 1.0])
    np.testing.assert_allclose(general[4], 2.0, rtol=4 * float(np.finfo(dtype_name).eps))
    np.testing.assert_array_equal(zero, np.ones(5))  # p = 0: x^0 = 1, for 0 and inf too


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_array_partial_power_accuracy(xp, dtype_name):
    """Within the bounds partial_power documents, for roots in [1e-12, 1e12]."""
    rng = np.random.default_rng(2)
    values = (10.0 ** rng.uniform(-12, 12, 400)).astype(dtype_name)
    bound = {"float32": 2e-6, "float64": 5e-15}[dtype_name]
    for partial in (0.3, 0.01, 0.49):
        p = _partial_array(xp, partial, getattr(xp, dtype_name))
        ours = to_numpy(padam_core.partial_power(xp.asarray(values), p, xp=xp))
        exponent = 2.0 * float(np.asarray(partial, dtype=dtype_name))
        exact = np.asarray([float(e) for e in _exact_power(values, exponent)])
        assert np.max(np.abs(ours - exact) / exact) <= bound, partial


@pytest.mark.parametrize("partial", [0.3, 0.125, 0.0])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_array_partial_trajectory_matches_oracle_and_python_partial(xp, dtype_name, partial):
    """An array p (exp/log) stays within SPEC's tolerance of the oracle and of a Python p."""
    dtype = getattr(xp, dtype_name)
    for variant in padam_core.VARIANTS:
        config = Config(variant=variant, partial=partial)
        grads = gradient_sequence((33,), 100, seed=5, kind="noisy")  # exact zeros included
        theta0 = np.random.default_rng(6).normal(size=33)
        expected = oracle_trajectory(theta0, grads, config)[-1]
        python = run_kernel(xp, theta0, grads, config, dtype)[-1]
        array_config = Config(variant=variant, partial=_partial_array(xp, partial, dtype))
        array = run_kernel(xp, theta0, grads, array_config, dtype)[-1]
        assert np.isfinite(array).all()
        assert relative_error(array, expected) <= TOLERANCE[dtype_name], variant
        assert relative_error(array, python) <= TOLERANCE[dtype_name], variant
