"""Kernel properties: purity, jit, devices, validation and the functional API's structures."""

from __future__ import annotations

import math

import numpy as np
import pytest

import padam_core
from tests.conftest import to_numpy


def test_inputs_are_not_modified(xp):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(3, 4)) for _ in range(2)] + [np.abs(rng.normal(size=(3, 4)))] * 3
    param, grad, m, v, v_max = (xp.asarray(a) for a in arrays)
    before = [to_numpy(a) for a in (param, grad, m, v, v_max)]
    for variant in padam_core.VARIANTS:
        padam_core.padam_step(param, grad, m, v, v_max, 3, variant=variant, weight_decay=0.1,
                              maximize=True)  # fmt: skip
    for original, array in zip(before, (param, grad, m, v, v_max), strict=True):
        np.testing.assert_array_equal(to_numpy(array), original)


def test_outputs_stay_on_the_input_device():
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    param = xp.asarray(np.ones(5), device=device)
    state = padam_core.init(param)
    new_param, new_state = padam_core.update(xp.asarray(np.ones(5), device=device), state, param)
    for array in (new_param, new_state.exp_avg, new_state.exp_avg_sq, new_state.max_exp_avg_sq):
        assert array.device == device


def test_jitted_update_matches_eager_and_compiles_once():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    traces = []

    def step(params, grads, state, partial):
        traces.append(1)  # runs only while tracing
        return padam_core.update(grads, state, params, partial=partial, validate=False)

    jitted = jax.jit(step)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(())}
    eager_params, jit_params = params, params
    eager_state = jit_state = padam_core.init(params)
    for t in range(5):
        grads = {"w": jnp.full((3, 2), math.cos(t)), "b": jnp.asarray(math.sin(t))}
        eager_params, eager_state = padam_core.update(grads, eager_state, eager_params)
        jit_params, jit_state = jitted(jit_params, grads, jit_state, jnp.asarray(0.125))
    assert len(traces) == 1  # traced once; the second and later calls reuse the compilation
    for key in params:
        np.testing.assert_allclose(jit_params[key], eager_params[key], rtol=1e-12)


def test_traced_hyperparameters_match_python_ones():
    # lr, b1, b2, partial as 0-d arrays (as inject_hyperparams passes them) and a traced count.
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    param, grad = jnp.linspace(-1.0, 1.0, 6), jnp.linspace(0.5, -2.0, 6)
    zeros = jnp.zeros(6)
    for variant in padam_core.VARIANTS:
        python = padam_core.padam_step(param, grad, zeros, zeros, zeros, 3, lr=0.05, b1=0.8,
                                       b2=0.99, partial=0.125, variant=variant)  # fmt: skip
        arrays = jax.jit(
            lambda count, lr, b1, b2, partial, variant=variant: padam_core.padam_step(
                param,
                grad,
                zeros,
                zeros,
                zeros,
                count,
                lr=lr,
                b1=b1,
                b2=b2,
                partial=partial,
                variant=variant,
            )
        )(jnp.asarray(3), jnp.asarray(0.05), jnp.asarray(0.8), jnp.asarray(0.99), 0.125)
        for ours, theirs in zip(python, arrays, strict=True):
            np.testing.assert_allclose(theirs, ours, rtol=1e-12)


@pytest.mark.parametrize("partial", [0.0625, 0.125, 0.25, 0.5])
def test_square_root_chain_equals_pow(partial):
    x = np.geomspace(1e-30, 1e30, 1001)
    chained = padam_core.partial_power(np.sqrt(x), partial, xp=np)
    np.testing.assert_allclose(chained, x**partial, rtol=4e-16 * 4)


def test_zero_partial_power_is_exactly_one():
    assert padam_core.partial_power(np.array([0.0, 1e-300, 5.0]), 0.0, xp=np) == 1.0


def test_bias_correction_keeps_float32_digits():
    # 1 - 0.999**1 in float32 is off by ~6e-5 relative; the expm1 form is off by ~1e-7.
    exact = 1 - 0.999
    step = np.asarray(1, dtype=np.int32)
    ours = padam_core.bias_correction(0.999, step, xp=np, dtype=np.float32)
    assert ours.dtype == np.float32
    assert abs(float(ours) - exact) / exact < 2e-7
    naive = 1 - np.float32(0.999) ** np.float32(1)
    assert abs(float(naive) - exact) / exact > 1e-5  # what we avoid


INVALID = [
    ({"lr": -0.1}, "Invalid lr value: -0.1 (expected 0 <= lr < inf)"),
    ({"lr": math.inf}, "Invalid lr value: inf"),
    ({"lr": math.nan}, "Invalid lr value: nan"),
    ({"b1": 1.0}, "Invalid b1 value: 1.0 (expected 0 <= b1 < 1)"),
    ({"b1": -0.1}, "Invalid b1 value: -0.1"),
    ({"b2": 1.0}, "Invalid b2 value: 1.0 (expected 0 <= b2 < 1)"),
    ({"b2": math.nan}, "Invalid b2 value: nan"),
    ({"eps": -1e-8}, "Invalid eps value: -1e-08 (expected 0 < eps < inf)"),
    ({"eps": math.inf}, "Invalid eps value: inf"),
    ({"partial": 0.7}, "Invalid partial value: 0.7 (expected 0 <= partial <= 0.5)"),
    ({"partial": -0.01}, "Invalid partial value: -0.01"),
    ({"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
    ({"weight_decay": math.inf}, "Invalid weight_decay value: inf"),
    ({"variant": "adam"}, "Invalid variant value: 'adam' (expected one of 'reference'"),
    ({"amsgrad": "yes"}, "Invalid amsgrad value: 'yes' (expected True or False)"),
    ({"maximize": 1}, "Invalid maximize value: 1"),
    ({"decoupled_weight_decay": None}, "Invalid decoupled_weight_decay value: None"),
    ({"lr": True}, "Invalid lr value: True (expected a real number)"),
]


@pytest.mark.parametrize(("values", "message"), INVALID, ids=[str(v) for v, _ in INVALID])
def test_invalid_hyperparameters_are_rejected_before_any_state_changes(values, message):
    params, grads = [np.ones(3)], [np.ones(3)]
    state = padam_core.init(params)
    with pytest.raises(ValueError) as error:
        padam_core.update(grads, state, params, **values)
    assert message in str(error.value)
    assert state.count == 0 and not state.exp_avg[0].any()
    np.testing.assert_array_equal(params[0], np.ones(3))


def test_validation_names_the_callers_argument():
    with pytest.raises(
        ValueError, match=r"Invalid beta_1 value: 1\.5 \(expected 0 <= beta_1 < 1\)"
    ):
        padam_core.validate_hyperparameters(names={"b1": "beta_1"}, b1=1.5)


def test_boundary_values_are_valid():
    padam_core.validate_hyperparameters(lr=0.0, b1=0.0, b2=0.0, eps=1e-300, partial=0.5,
                                        weight_decay=0.0)  # fmt: skip
    padam_core.validate_hyperparameters(partial=0.0, lr=np.float32(0.1))


def test_mismatched_structures_are_rejected():
    state = padam_core.init({"a": np.ones(2)})
    with pytest.raises(ValueError, match="Structure mismatch"):
        padam_core.update({"b": np.ones(2)}, state, {"a": np.ones(2)})
    state = padam_core.init([np.ones(2)])
    with pytest.raises(ValueError, match="Structure mismatch"):
        padam_core.update([np.ones(2), np.ones(2)], state, [np.ones(2)])


def test_amsgrad_state_is_required_for_amsgrad():
    state = padam_core.init([np.ones(2)], amsgrad=False)
    with pytest.raises(ValueError, match="amsgrad=True but the state"):
        padam_core.update([np.ones(2)], state, [np.ones(2)], amsgrad=True)
    assert state.max_exp_avg_sq is None
    _, new_state = padam_core.update([np.ones(2)], state, [np.ones(2)])
    assert new_state.max_exp_avg_sq is None and new_state.count == 1
