"""A traced ``partial`` (optax.inject_hyperparams, schedules) costs what a Python one does: the
switch over the square-root chains, and exp(2p log x) otherwise, with the same trajectory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import padam_core
from padam_core.kernel import SQRT_CHAIN_LENGTHS
from padam_jax import padam, scale_by_padam
from padam_jax.transform import switch_on_partial
from tests.oracle import Config, gradient_sequence, oracle_trajectory, relative_error

SHAPES = {"w": (40,), "b": (3, 5), "empty": (0,)}


def _trajectory(optimizer: optax.GradientTransformation, dtype, steps: int = 100):
    """Parameters after ``steps`` jitted steps on the oracle's "noisy" gradients (with zeros)."""
    grads = {k: gradient_sequence(shape, steps, seed=i, kind="noisy")
             for i, (k, shape) in enumerate(SHAPES.items())}  # fmt: skip
    params = {k: jnp.asarray(np.random.default_rng(9).normal(size=s), dtype)
              for k, s in SHAPES.items()}  # fmt: skip
    theta0 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, grad):
        updates, state = optimizer.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    for t in range(steps):
        grad = {k: jnp.asarray(grads[k][t], dtype) for k in SHAPES}
        params, state = step(params, state, grad)
    return params, theta0, grads


@pytest.mark.parametrize("partial", [0.5, 0.25, 0.125, 0.0625, 0.0, 0.3, 0.01])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_array_partial_equals_the_python_partial(dtype, partial):
    """Chain values take the chain branch: bitwise the Python step. Other values: exp/log for
    the array, pow for the Python number, within SPEC's cross-framework tolerance."""
    tolerance = {jnp.float32: 1e-5, jnp.float64: 1e-12}[dtype]
    for variant in padam_core.VARIANTS:
        python, _, _ = _trajectory(scale_by_padam(partial=partial, variant=variant), dtype, 30)
        array = jnp.asarray(partial, dtype)
        traced, _, _ = _trajectory(scale_by_padam(partial=array, variant=variant), dtype, 30)
        for key in ("w", "b"):
            ours, theirs = np.asarray(traced[key]), np.asarray(python[key])
            if partial == 0.0 or partial in SQRT_CHAIN_LENGTHS:
                np.testing.assert_array_equal(ours, theirs)
            else:
                assert relative_error(ours, theirs) <= tolerance, (variant, key)


@pytest.mark.parametrize("partial", [0.3, 0.125, 0.01])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_inject_hyperparams_partial_matches_oracle(dtype, partial):
    tolerance = {jnp.float32: 1e-5, jnp.float64: 1e-12}[dtype]
    for variant in padam_core.VARIANTS:
        optimizer = optax.inject_hyperparams(padam, hyperparam_dtype=dtype)(
            learning_rate=0.01, partial=partial, variant=variant
        )
        params, theta0, grads = _trajectory(optimizer, dtype)
        # The oracle gets the p the optimizer holds (0.3 rounded to float32 for float32).
        config = Config(lr=0.01, partial=float(jnp.asarray(partial, dtype)), variant=variant)
        for key in ("w", "b"):
            expected = oracle_trajectory(theta0[key], grads[key], config)[-1]
            assert relative_error(np.asarray(params[key]), expected) <= tolerance, (variant, key)


def test_changing_an_injected_partial_switches_branch_without_recompiling():
    optimizer = optax.inject_hyperparams(padam)(learning_rate=0.1, partial=0.125)
    params = {"w": jnp.linspace(-1.0, 1.0, 16, dtype=jnp.float32)}
    grad = {"w": jnp.cos(params["w"] * 5)}
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = optimizer.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    results = {}
    for partial in (0.125, 0.3, 0.5, 0.0):
        state = optimizer.init(params)
        state.hyperparams["partial"] = jnp.asarray(partial, jnp.float32)
        results[partial] = np.asarray(step(params, state)[0]["w"])
        reference = padam(learning_rate=0.1, partial=partial)
        expected, _ = jax.jit(lambda p, s, r=reference: r.update(grad, s, p))(
            params, reference.init(params)
        )
        np.testing.assert_allclose(
            results[partial], np.asarray(params["w"] + expected["w"]), rtol=1e-6, atol=1e-7
        )
    assert len(traces) == 1  # one compilation for every value of p
    assert not np.array_equal(results[0.125], results[0.3])


def test_switch_is_a_conditional_for_a_traced_partial_and_absent_for_a_python_one():
    def step(partial):
        return switch_on_partial(partial, lambda p: padam_core.partial_power(x, p, xp=jnp))

    x = jnp.linspace(0.0, 4.0, 9)
    traced = jax.make_jaxpr(step)(jnp.float32(0.125))
    assert "cond" in str(traced)
    assert "cond" not in str(jax.make_jaxpr(lambda: step(0.125))())
    np.testing.assert_array_equal(np.asarray(step(jnp.float32(0.125))), np.sqrt(np.sqrt(x)))
    np.testing.assert_array_equal(np.asarray(step(jnp.float32(0.0))), np.ones(9))
    general = np.asarray(step(jnp.float32(0.3)))
    assert general[0] == 0.0  # 0 ** 0.6 = 0, not NaN from 0 * log(0)
    np.testing.assert_allclose(general, np.asarray(x) ** np.float32(0.6), rtol=2e-6)
