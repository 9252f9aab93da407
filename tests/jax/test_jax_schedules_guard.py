"""padam_jax's schedules of p and its non-finite guard (issue 11): trajectories against the
kernel, one compilation as p changes, optax.inject_hyperparams, bitwise skips under jit, state
files and checkpoints with the guard, and the errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import padam_core
from padam_core import schedules
from padam_jax import (
    ScaleByPadamState,
    SkipNonfiniteState,
    load_state,
    padam,
    save_state,
    scale_by_padam,
    skipped_steps,
    state_from_arrays,
    state_to_arrays,
)

SHAPES = {"w": (4, 3), "b": (3,)}
LR = 0.05
STEPS = 100
TOLERANCE = 1e-5  # docs/numerics.md: two frameworks, same float32 inputs, 100 steps

BUILT_IN = {
    "constant": schedules.constant(0.3),
    "linear": schedules.linear(0.5, 0.125, steps=40),
    "cosine": schedules.cosine(0.5, 0.0625, steps=60),
    "piecewise": schedules.piecewise([20, 50], [0.5, 0.25, 0.125]),
}


def make_params(dtype: Any = np.float32, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()}


def make_noise(steps: int = STEPS, dtype: Any = np.float32, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    noise = {name: rng.normal(size=(steps, *shape)) for name, shape in SHAPES.items()}
    for values in noise.values():
        values[0] *= 100.0  # a large first gradient separates the variants
    return {name: values.astype(dtype) for name, values in noise.items()}


def gradient(params: dict, noise: dict, t: Any) -> dict:
    return {name: noise[name][t] + params[name] * 0.5 for name in params}


def make_step(optimizer: optax.GradientTransformation) -> Callable:
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run(optimizer, params, noise, steps=STEPS, *, jit=True):
    step = jax.jit(make_step(optimizer)) if jit else make_step(optimizer)
    params = jax.tree.map(jnp.asarray, params)
    state = optimizer.init(params)
    for t in range(steps):
        params, state = step(params, state, gradient(params, noise, t))
    return params, state


def kernel_loop(params: dict, noise: dict, partial: Callable, steps: int = STEPS, **flags):
    """padam_core.padam_step leaf by leaf in NumPy float32, p = partial(t) for t = 1, 2, ..."""
    params = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    v_max = {k: np.zeros_like(x) for k, x in params.items()}
    for t in range(1, steps + 1):
        grads = gradient(params, noise, t - 1)
        for name in params:
            result = padam_core.padam_step(
                params[name], grads[name], m[name], v[name], v_max[name], t,
                lr=LR, partial=partial(t), **flags,
            )  # fmt: skip
            params[name], m[name], v[name] = result.param, result.exp_avg, result.exp_avg_sq
            v_max[name] = result.max_exp_avg_sq
    return params


def relative_error(result: Any, expected: Any) -> float:
    worst = 0.0
    for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(expected), strict=True):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        assert got.shape == want.shape
        worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    return worst


def bits(tree: Any) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


def plain_schedule(t: Any) -> Any:
    """A callable of one's own (not a padam_core Schedule): jnp ops, so jit can trace it."""
    return 0.125 + 0.375 / t


# ---- schedules: trajectories -------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["torch", "reference"])
@pytest.mark.parametrize("name", [*BUILT_IN, "plain callable"])
def test_schedule_trajectory_equals_kernel_loop(name: str, variant: str) -> None:
    partial = BUILT_IN.get(name, plain_schedule)
    params, noise = make_params(), make_noise()
    result, state = run(padam(LR, partial=partial, variant=variant), params, noise)
    expected = kernel_loop(params, noise, lambda t: float(partial(t)), variant=variant)
    assert result["w"].dtype == jnp.float32
    assert int(state[1].count) == STEPS
    assert relative_error(result, expected) < TOLERANCE
    # p moved: the constant-p run at the schedule's first value is another trajectory.
    if name != "constant":
        constant = kernel_loop(params, noise, lambda t: float(partial(1)), variant=variant)
        assert relative_error(constant, expected) > 100 * TOLERANCE


@pytest.mark.parametrize("name", ["linear", "piecewise"])
def test_schedule_outside_jit_is_evaluated_on_the_host(name: str) -> None:
    partial = BUILT_IN[name]
    params, noise = make_params(), make_noise(60)
    result, _ = run(padam(LR, partial=partial), params, noise, 60, jit=False)
    expected = kernel_loop(params, noise, partial, 60)  # partial(int) is a Python float
    assert relative_error(result, expected) < TOLERANCE


def test_scale_by_padam_takes_a_schedule() -> None:
    partial = BUILT_IN["cosine"]
    params, noise = make_params(), make_noise(60)
    optimizer = optax.chain(scale_by_padam(partial=partial), optax.scale(-LR))
    result, state = run(optimizer, params, noise, 60)
    assert isinstance(state[0], ScaleByPadamState)
    assert relative_error(result, kernel_loop(params, noise, partial, 60)) < TOLERANCE


def test_p_changing_does_not_recompile() -> None:
    optimizer = padam(LR, partial=schedules.linear(0.5, 0.125, steps=10))
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)  # runs only while tracing
        return make_step(optimizer)(params, state, grads)

    params, noise = jax.tree.map(jnp.asarray, make_params()), make_noise(30)
    state = optimizer.init(params)
    for t in range(30):  # across the ramp (p = 0.5 ... 0.125) and the plateau after it
        params, state = step(params, state, gradient(params, noise, t))
    assert len(traces) == 1
    assert step._cache_size() == 1


# ---- schedules and optax.inject_hyperparams ----------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "piecewise"])
def test_inject_hyperparams_with_a_schedule_equals_the_direct_form(name: str) -> None:
    partial = BUILT_IN[name]
    params, noise = make_params(), make_noise(60)
    direct, _ = run(padam(LR, partial=partial), params, noise, 60)
    injected_optimizer = optax.inject_hyperparams(padam)(learning_rate=LR, partial=partial)
    injected, state = run(injected_optimizer, params, noise, 60)
    step = jax.jit(make_step(injected_optimizer))  # one compilation, as p changes
    trained, trained_state = jax.tree.map(jnp.asarray, params), injected_optimizer.init(params)
    for t in range(12):
        trained, trained_state = step(trained, trained_state, gradient(trained, noise, t))
    assert step._cache_size() == 1
    static_optimizer = optax.inject_hyperparams(padam, static_args="partial")(
        learning_rate=LR, partial=partial
    )
    static, _ = run(static_optimizer, params, noise, 60)
    # Same p at every step (a one-step shift would differ by far more than rounding).
    assert relative_error(injected, direct) < 1e-6
    assert relative_error(static, direct) < 1e-6
    # The logged value is the p of the latest step, t = 60.
    assert float(state.hyperparams["partial"]) == pytest.approx(float(partial(60)), rel=1e-6)
    # What a 0-based evaluation (optax's count, one step early) would give instead:
    shifted, _ = run(padam(LR, partial=lambda t: partial(t - 1)), params, noise, 60)
    assert relative_error(shifted, direct) > 100 * TOLERANCE


def test_inject_hyperparams_with_a_numeric_partial_is_settable() -> None:
    optimizer = optax.inject_hyperparams(padam)(learning_rate=LR, partial=0.5)
    params, noise = jax.tree.map(jnp.asarray, make_params()), make_noise(20)
    step = jax.jit(make_step(optimizer))
    state = optimizer.init(params)
    for t in range(20):
        if t == 10:
            state.hyperparams["partial"] = jnp.asarray(0.125, state.hyperparams["partial"].dtype)
        params, state = step(params, state, gradient(params, noise, t))
    expected = kernel_loop(make_params(), noise, lambda t: 0.5 if t <= 10 else 0.125, 20)
    assert relative_error(params, expected) < TOLERANCE
    assert step._cache_size() == 1


# ---- the guard ---------------------------------------------------------------------------------


def nan_in_one_leaf(grads: dict, value: float = float("nan")) -> dict:
    bad = dict(grads)
    bad["b"] = bad["b"].at[1].set(value)
    return bad


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_guard_skips_a_nonfinite_step_bitwise_under_jit(value: float) -> None:
    schedule = optax.linear_schedule(LR, 0.0, 50)  # a chained state that counts too
    optimizer = padam(schedule, partial=BUILT_IN["linear"], weight_decay=0.01,
                      skip_nonfinite=True)  # fmt: skip
    step = jax.jit(make_step(optimizer))
    params = jax.tree.map(jnp.asarray, make_params())
    noise = make_noise(20)
    state = optimizer.init(params)
    for t in range(5):
        params, state = step(params, state, gradient(params, noise, t))
    params["w"] = params["w"].at[0, 0].set(-0.0)  # p + 0.0 would make it +0.0
    before_params, before_state = params, state

    params, state = step(params, state, nan_in_one_leaf(gradient(params, noise, 5), value))
    assert bits(params) == bits(before_params)
    assert np.signbit(np.asarray(params["w"])[0, 0])
    assert int(skipped_steps(state)) == 1
    assert bits(state.inner_state) == bits(before_state.inner_state)  # counts included
    assert int(state.inner_state[1].count) == 5

    # Going on equals a run that never saw the bad step (same compiled step, so bitwise).
    clean_params, clean_state = before_params, before_state
    for t in range(5, 15):
        params, state = step(params, state, gradient(params, noise, t))
        clean_params, clean_state = step(
            clean_params, clean_state, gradient(clean_params, noise, t)
        )
    assert bits(params) == bits(clean_params)
    assert bits(state.inner_state) == bits(clean_state.inner_state)
    assert int(skipped_steps(state)) == 1 and int(skipped_steps(clean_state)) == 0


def test_guard_with_inject_hyperparams_and_a_static_schedule_stays_in_step() -> None:
    # docs/jax.md: a schedule handed to padam (static_args) moves with Padam's count, which
    # a skipped step does not advance.
    optimizer = optax.inject_hyperparams(padam, static_args="partial")(
        learning_rate=LR, partial=BUILT_IN["linear"], skip_nonfinite=True
    )
    step = jax.jit(make_step(optimizer))
    params, noise = jax.tree.map(jnp.asarray, make_params()), make_noise(20)
    state = optimizer.init(params)
    for t in range(3):
        params, state = step(params, state, gradient(params, noise, t))
    clean_params, clean_state = params, state
    params, state = step(params, state, nan_in_one_leaf(gradient(params, noise, 3)))
    for t in range(3, 20):
        params, state = step(params, state, gradient(params, noise, t))
        clean_params, clean_state = step(
            clean_params, clean_state, gradient(clean_params, noise, t)
        )
    assert bits(params) == bits(clean_params)
    assert int(skipped_steps(state)) == 1


def test_guard_on_scale_by_padam_returns_negative_zero_updates() -> None:
    optimizer = scale_by_padam(partial=0.25, skip_nonfinite=True)
    params = jax.tree.map(jnp.asarray, make_params())
    state = optimizer.init(params)
    assert isinstance(state, SkipNonfiniteState)
    assert isinstance(state.inner_state, ScaleByPadamState)
    grads = nan_in_one_leaf(gradient(params, make_noise(1), 0))
    updates, new_state = jax.jit(optimizer.update)(grads, state)
    for update in jax.tree.leaves(updates):
        assert np.all(np.asarray(update) == 0.0) and np.all(np.signbit(np.asarray(update)))
    assert bits(new_state.inner_state) == bits(state.inner_state)
    assert int(skipped_steps(new_state)) == 1


def test_guard_keeps_complex_parameters_bitwise() -> None:
    optimizer = padam(LR, skip_nonfinite=True)
    params = {"z": jnp.asarray([complex(-0.0, -0.0), 1 - 2j, -3 + 0j], jnp.complex64)}
    state = optimizer.init(params)
    grads = {"z": jnp.asarray([1j, complex(float("nan"), 0.0), 1.0], jnp.complex64)}
    new_params, new_state = jax.jit(make_step(optimizer))(params, state, grads)
    assert bits(new_params) == bits(params)
    assert int(skipped_steps(new_state)) == 1


def test_guard_off_state_is_unchanged_and_guard_on_without_nans_is_the_same_run() -> None:
    params, noise = make_params(), make_noise(30)
    plain, plain_state = run(padam(LR, partial=0.3), params, noise, 30)
    guarded, guarded_state = run(padam(LR, partial=0.3, skip_nonfinite=True), params, noise, 30)
    assert jax.tree.structure(plain_state) == jax.tree.structure(padam(LR).init(params))
    assert not any(
        isinstance(node, SkipNonfiniteState)
        for node in jax.tree.leaves(plain_state, is_leaf=lambda n: isinstance(n, tuple))
    )
    assert isinstance(plain_state[1], ScaleByPadamState)
    assert bits(guarded) == bits(plain)
    assert bits(guarded_state.inner_state) == bits(plain_state)
    with pytest.raises(ValueError, match="skip_nonfinite=True, found 0"):
        skipped_steps(plain_state)


def test_guard_off_propagates_nan_like_optax_amsgrad() -> None:
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), make_params(np.float64))
    noise = make_noise(6, np.float64)
    results = []
    for optimizer in (padam(0.01, partial=0.5, variant="optax"), optax.amsgrad(0.01)):
        step, trained = jax.jit(make_step(optimizer)), params
        state = optimizer.init(trained)
        for t in range(6):
            grads = gradient(trained, noise, t)
            trained, state = step(trained, state, nan_in_one_leaf(grads) if t == 3 else grads)
        results.append(trained)
    ours, theirs = results
    # The NaN reached that element of the parameter (and stays), nothing else.
    assert np.array_equal(np.isnan(np.asarray(ours["b"])), [False, True, False])
    assert not np.isnan(np.asarray(ours["w"])).any()
    for name in ours:
        np.testing.assert_allclose(np.asarray(ours[name]), np.asarray(theirs[name]), rtol=1e-12)


def test_skipped_steps_is_found_through_optax_wrappers() -> None:
    params = jax.tree.map(jnp.asarray, make_params())
    grads = nan_in_one_leaf(gradient(params, make_noise(1), 0))
    wrapped = {
        "chain": optax.chain(optax.clip_by_global_norm(1.0), padam(LR, skip_nonfinite=True)),
        "inject": optax.inject_hyperparams(padam)(learning_rate=LR, skip_nonfinite=True),
        "multisteps": optax.MultiSteps(padam(LR, skip_nonfinite=True), every_k_schedule=1),
    }
    for name, optimizer in wrapped.items():
        state = optimizer.init(params)
        new_params, state = jax.jit(make_step(optimizer))(params, state, grads)
        assert int(jax.jit(skipped_steps)(state)) == 1, name
        if name != "chain":  # clip_by_global_norm turns the NaN into NaNs everywhere first
            assert bits(new_params) == bits(params), name


def test_guard_state_in_state_files_and_checkpoints(tmp_path) -> None:
    optimizer = padam(LR, partial=BUILT_IN["linear"], skip_nonfinite=True)
    params, noise = make_params(), make_noise(8)
    trained, state = run(optimizer, params, noise, 8)
    step = jax.jit(make_step(optimizer))
    trained, state = step(trained, state, nan_in_one_leaf(gradient(trained, noise, 0)))
    assert int(skipped_steps(state)) == 1

    # Cross-framework file: moments and count only; the counter comes from `like`.
    path = tmp_path / "state.safetensors"
    save_state(path, state)
    fresh = optimizer.init(jax.tree.map(jnp.asarray, params))
    loaded = load_state(path, like=fresh)
    assert bits(loaded.inner_state) == bits(state.inner_state)
    assert int(skipped_steps(loaded)) == 0
    # The file reads into an unguarded padam's state too.
    unguarded = load_state(path, like=padam(LR).init(jax.tree.map(jnp.asarray, params)))
    assert bits(unguarded) == bits(state.inner_state)

    # Checkpoint of the whole tree: the counter included, the types checked.
    restored = state_from_arrays(
        state_to_arrays(state), like=jax.eval_shape(optimizer.init, params)
    )
    assert bits(restored) == bits(state)
    assert int(skipped_steps(restored)) == 1
    with pytest.raises(ValueError, match="SkipNonfiniteState"):
        state_from_arrays(state_to_arrays(state), like=padam(LR).init(params))


# ---- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_skip_nonfinite_must_be_a_bool(value: Any) -> None:
    for make in (padam, scale_by_padam):
        with pytest.raises(ValueError, match=f"Invalid skip_nonfinite value: {value!r}"):
            make(skip_nonfinite=value)


@pytest.mark.parametrize("make", [padam, scale_by_padam])
def test_partial_string_is_refused(make: Callable) -> None:
    with pytest.raises(ValueError, match=re.escape("Invalid partial value: '0.125'")):
        make(partial="0.125")


def test_schedule_returning_out_of_range_value_raises_naming_the_step() -> None:
    optimizer = padam(LR, partial=lambda t: jnp.where(t < 3, 0.25, 0.7))
    params = jax.tree.map(jnp.asarray, make_params())
    state = optimizer.init(params)
    grads = gradient(params, make_noise(3), 0)
    for _ in range(2):
        _, state = optimizer.update(grads, state, params)
    before = bits(state)
    with pytest.raises(ValueError, match=r"partial schedule .* at step .*3.*Invalid partial value"):
        optimizer.update(grads, state, params)
    assert bits(state) == before and int(state[1].count) == 2
