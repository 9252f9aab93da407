"""padam_jax against the padam_core float64 oracle (NumPy) and against optax's own optimizers.

Every trajectory trains a small two-leaf pytree for 100 steps on gradients g = noise_t + theta / 2
(so they depend on the parameters), where the first noise draw is 100x larger than the rest: a
spike that separates the ``torch`` and ``optax`` variants. Errors are max|x - ref| / max|ref|
over the whole tensor, docs/numerics.md's measure.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import padam_core
from padam_jax import padam, scale_by_padam

STEPS = 100
SHAPES = {"w": (4, 3), "b": (3,)}
LEARNING_RATE = 0.05


def make_noise(seed: int = 0, steps: int = STEPS, spike: float = 100.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = {name: rng.normal(size=(steps, *shape)) for name, shape in SHAPES.items()}
    for values in noise.values():
        values[0] *= spike
    return noise


def initial_params(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape) for name, shape in SHAPES.items()}


def gradient(params: dict[str, Any], noise: dict[str, Any], t: int) -> dict[str, Any]:
    return {name: noise[name][t] + 0.5 * params[name] for name in params}


def oracle(
    theta0: dict[str, np.ndarray],
    noise: dict[str, np.ndarray],
    *,
    steps: int = STEPS,
    learning_rates: Sequence[float] | None = None,
    partials: Sequence[float] | None = None,
    grad_transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda g: g,
    **hyperparameters: Any,
) -> dict[str, np.ndarray]:
    """The padam_core kernel on float64 NumPy arrays: the reference every adapter meets."""
    params = {name: np.array(value, np.float64) for name, value in theta0.items()}
    state = padam_core.init(params, amsgrad=hyperparameters.get("amsgrad", True))
    for t in range(steps):
        if learning_rates is not None:
            hyperparameters["lr"] = learning_rates[t]
        if partials is not None:
            hyperparameters["partial"] = partials[t]
        grads = grad_transform(gradient(params, noise, t))
        params, state = padam_core.update(grads, state, params, **hyperparameters)
    return params


def run_optax(
    optimizer: optax.GradientTransformation,
    theta0: dict[str, np.ndarray],
    noise: dict[str, np.ndarray],
    *,
    dtype: Any = jnp.float64,
    steps: int = STEPS,
    jit: bool = True,
) -> dict[str, np.ndarray]:
    """Train with ``optimizer`` (jitted by default); gradients are made in float64, then cast."""
    params = {name: jnp.asarray(value, dtype) for name, value in theta0.items()}
    state = optimizer.init(params)
    noise_jax = {name: jnp.asarray(value) for name, value in noise.items()}

    def step(params, state, t):
        wide = {name: value.astype(jnp.float64) for name, value in params.items()}
        grads = {name: g.astype(dtype) for name, g in gradient(wide, noise_jax, t).items()}
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    if jit:
        step = jax.jit(step)
    for t in range(steps):
        params, state = step(params, state, t)
    return {name: np.asarray(value.astype(jnp.float64)) for name, value in params.items()}


def relative_error(result: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    return max(
        float(np.max(np.abs(result[n] - reference[n])) / np.max(np.abs(reference[n])))
        for n in reference
    )


DECAY_MODES = {"none": (0.0, False), "coupled": (0.01, False), "decoupled": (0.01, True)}


def case_flags(variant: str, amsgrad: bool, decay: str, maximize: bool) -> dict[str, Any]:
    """The keyword arguments of one (variant, amsgrad, decay mode, maximize) case."""
    weight_decay, decoupled = DECAY_MODES[decay]
    return dict(weight_decay=weight_decay, decoupled_weight_decay=decoupled, amsgrad=amsgrad,
                maximize=maximize, variant=variant)  # fmt: skip


FLAG_CASES = list(
    itertools.product(padam_core.VARIANTS, (True, False), tuple(DECAY_MODES), (False, True))
)


@pytest.mark.parametrize(("variant", "amsgrad", "decay", "maximize"), FLAG_CASES)
def test_float64_trajectory_matches_core_oracle(
    variant: str, amsgrad: bool, decay: str, maximize: bool
) -> None:
    flags = case_flags(variant, amsgrad, decay, maximize)
    theta0, noise = initial_params(), make_noise()
    result = run_optax(padam(LEARNING_RATE, partial=0.125, **flags), theta0, noise)
    reference = oracle(theta0, noise, lr=LEARNING_RATE, partial=0.125, **flags)
    assert relative_error(result, reference) < 1e-12
    # The run did something: it moved far from where it started.
    assert relative_error(theta0, reference) > 1e-2


@pytest.mark.parametrize("partial", [0.0, 0.0625, 0.25, 0.3, 0.5])
def test_float64_trajectory_matches_oracle_for_other_partials(partial: float) -> None:
    theta0, noise = initial_params(), make_noise()
    result = run_optax(padam(LEARNING_RATE, partial=partial), theta0, noise)
    reference = oracle(theta0, noise, lr=LEARNING_RATE, partial=partial)
    assert relative_error(result, reference) < 1e-12


@pytest.mark.parametrize(
    ("variant", "amsgrad", "decay", "maximize"),
    [
        ("reference", True, "coupled", False),
        ("reference", False, "decoupled", True),
        ("torch", True, "decoupled", False),
        ("torch", False, "none", True),
        ("optax", True, "none", False),
        ("optax", False, "coupled", True),
    ],
)
def test_float32_trajectory_within_spec_tolerance(
    variant: str, amsgrad: bool, decay: str, maximize: bool
) -> None:
    flags = case_flags(variant, amsgrad, decay, maximize)
    theta0, noise = initial_params(), make_noise()
    result = run_optax(padam(LEARNING_RATE, **flags), theta0, noise, dtype=jnp.float32)
    reference = oracle(theta0, noise, lr=LEARNING_RATE, **flags)
    assert relative_error(result, reference) < 1e-5


# ---- 16-bit parameters -------------------------------------------------------------------------

LOW_PRECISION = {
    "bfloat16": (jnp.bfloat16, ml_dtypes.bfloat16),
    "float16": (jnp.float16, np.float16),
}


def ulps_apart(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|result - reference| in units in the last place of ``reference`` (16-bit arrays)."""
    # Both formats are sign-magnitude: the next bit pattern is the next value away from zero.
    away = (reference.view(np.uint16) + np.uint16(1)).view(reference.dtype)
    ulp = np.abs(away.astype(np.float64) - reference.astype(np.float64))
    return np.abs(result.astype(np.float64) - reference.astype(np.float64)) / ulp


@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
@pytest.mark.parametrize("variant", padam_core.VARIANTS)
def test_low_precision_step_is_float32_computation_rounded_once(
    dtype_name: str, variant: str
) -> None:
    _, numpy_dtype = LOW_PRECISION[dtype_name]
    rng = np.random.default_rng(7)
    size = 4096
    theta = rng.normal(size=size).astype(numpy_dtype)
    # Gradients over four decades, some exactly zero.
    grad = (rng.normal(size=size) * 10.0 ** rng.uniform(-3, 1, size=size)).astype(numpy_dtype)
    grad[::97] = 0
    mu = (0.1 * rng.normal(size=size)).astype(np.float32)
    nu = (0.01 * rng.random(size=size)).astype(np.float32)
    nu_max = (nu * 1.5).astype(np.float32)

    optimizer = padam(0.1, variant=variant)
    params = {"w": jnp.asarray(theta)}
    decay_state, padam_state, lr_state = optimizer.init(params)  # chain(decay, padam, lr)
    assert padam_state.mu["w"].dtype == jnp.float32
    padam_state = padam_state._replace(
        count=jnp.asarray(6, jnp.int32),
        mu={"w": jnp.asarray(mu)},
        nu={"w": jnp.asarray(nu)},
        nu_max={"w": jnp.asarray(nu_max)},
    )
    updates, _ = optimizer.update(
        {"w": jnp.asarray(grad)}, (decay_state, padam_state, lr_state), params
    )
    new_theta = np.asarray(optax.apply_updates(params, updates)["w"])
    assert new_theta.dtype == numpy_dtype

    # The same step computed by the kernel in float32 from the same inputs, rounded once.
    float32_step = padam_core.padam_step(
        theta.astype(np.float32),
        grad.astype(np.float32),
        mu,
        nu,
        nu_max,
        7,
        lr=0.1,
        variant=variant,
    )
    expected = float32_step.param.astype(numpy_dtype)
    assert np.all(np.isfinite(new_theta.astype(np.float32)))
    # optax's convention: the update comes back in the gradient's dtype, so it is rounded once
    # itself before apply_updates rounds the sum: within 1 ulp of the parameter plus half an ulp
    # of the update of the float32 step rounded once (issue 10, cause 13).
    update = np.asarray(updates["w"])
    assert update.dtype == numpy_dtype
    update_ulp = np.abs(
        (np.abs(update).view(np.uint16) + np.uint16(1)).view(numpy_dtype).astype(np.float64)
        - np.abs(update).astype(np.float64)
    )
    away = (expected.view(np.uint16) + np.uint16(1)).view(numpy_dtype)
    ulp = np.abs(away.astype(np.float64) - expected.astype(np.float64))
    error = np.abs(new_theta.astype(np.float64) - expected.astype(np.float64))
    assert np.all(error <= ulp + 0.5 * update_ulp)
    assert np.mean(ulps_apart(new_theta, expected) == 0) > 0.9  # mostly the same bits


@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
def test_low_precision_training_never_produces_nan_or_inf(dtype_name: str) -> None:
    jax_dtype, _ = LOW_PRECISION[dtype_name]
    theta0, noise = initial_params(), make_noise(spike=10.0)
    for values in noise.values():
        values[40:60] = 0.0  # zero gradients apart from the theta / 2 term
    zero_grads = {name: jnp.zeros(shape, jax_dtype) for name, shape in SHAPES.items()}
    optimizer = padam(LEARNING_RATE, weight_decay=0.01)

    # Exactly-zero gradients from the first step: eps = 1e-8 underflows in float16, the float32
    # state keeps the denominator positive.
    params = {name: jnp.asarray(value, jax_dtype) for name, value in theta0.items()}
    state = optimizer.init(params)
    updates, state = jax.jit(optimizer.update)(zero_grads, state, params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))

    result = run_optax(optimizer, theta0, noise, dtype=jax_dtype)
    reference = oracle(theta0, noise, lr=LEARNING_RATE, weight_decay=0.01)
    assert all(np.all(np.isfinite(value)) for value in result.values())
    # Rounding drift over 100 steps is expected; a wrong computation would be far off.
    assert relative_error(result, reference) < 5e-2


# ---- identities with optax's own optimizers ----------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            dict(partial=0.5, variant="optax"),
            lambda lr: optax.amsgrad(lr),
        ),
        (
            dict(partial=0.5, variant="optax", amsgrad=False),
            lambda lr: optax.adam(lr),
        ),
        (
            dict(
                partial=0.5,
                variant="optax",
                amsgrad=False,
                weight_decay=0.1,
                decoupled_weight_decay=True,
            ),
            lambda lr: optax.adamw(lr, weight_decay=0.1),
        ),
    ],
    ids=["amsgrad", "adam", "adamw"],
)
def test_half_partial_optax_variant_equals_optax_optimizer(
    ours: dict[str, Any], theirs: Callable[[float], optax.GradientTransformation]
) -> None:
    theta0, noise = initial_params(), make_noise()
    result = run_optax(padam(0.01, **ours), theta0, noise)
    expected = run_optax(theirs(0.01), theta0, noise)
    assert relative_error(result, expected) < 1e-12
    # ... while the default partial does not.
    default_partial = dict(ours, partial=0.125)
    assert relative_error(run_optax(padam(0.01, **default_partial), theta0, noise), expected) > 1e-3


def test_torch_and_optax_variants_differ_after_a_spike_but_not_for_constant_gradients() -> None:
    def directions(variant: str, gradients: np.ndarray) -> np.ndarray:
        transform = scale_by_padam(variant=variant)
        state = transform.init(jnp.zeros(gradients.shape[1:]))

        def step(state, grad):
            update, state = transform.update(grad, state)
            return state, update

        return np.asarray(jax.lax.scan(step, state, jnp.asarray(gradients))[1])

    rng = np.random.default_rng(5)
    spike = rng.normal(size=(30, 8))
    spike[0] *= 100.0
    constant = np.tile(rng.normal(size=8), (30, 1))

    def gap(gradients: np.ndarray) -> float:
        torch_style, optax_style = directions("torch", gradients), directions("optax", gradients)
        return float(np.max(np.abs(torch_style - optax_style)) / np.max(np.abs(optax_style)))

    assert gap(spike) > 1e-2
    assert gap(constant) < 1e-12


def test_complex_parameters_match_core_oracle_and_optax_adam() -> None:
    rng = np.random.default_rng(3)
    theta0 = {"w": rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))}
    noise = {"w": rng.normal(size=(30, 3, 2)) + 1j * rng.normal(size=(30, 3, 2))}
    params = {"w": jnp.asarray(theta0["w"])}
    optimizer = padam(LEARNING_RATE, variant="optax", partial=0.5, amsgrad=False)
    state = optimizer.init(params)
    # v holds |g|^2: a real array even for a complex parameter.
    assert state[1].nu["w"].dtype == jnp.float64  # chain(decay, scale_by_padam, lr)
    adam = optax.adam(LEARNING_RATE)
    adam_params, adam_state = params, adam.init(params)
    reference = {"w": theta0["w"].copy()}
    core_state = padam_core.init(reference, amsgrad=False)

    @jax.jit
    def step(params, state, adam_params, adam_state, grads):
        updates, state = optimizer.update(grads, state, params)
        adam_updates, adam_state = adam.update(grads, adam_state, adam_params)
        return (
            optax.apply_updates(params, updates),
            state,
            optax.apply_updates(adam_params, adam_updates),
            adam_state,
        )

    for t in range(30):
        grads = {"w": jnp.asarray(noise["w"][t])}
        params, state, adam_params, adam_state = step(params, state, adam_params, adam_state, grads)
        reference, core_state = padam_core.update(
            {"w": noise["w"][t]},
            core_state,
            reference,
            lr=LEARNING_RATE,
            partial=0.5,
            variant="optax",
            amsgrad=False,
        )
    result = {"w": np.asarray(params["w"])}
    assert relative_error(result, reference) < 1e-12
    assert relative_error(result, {"w": np.asarray(adam_params["w"])}) < 1e-12
