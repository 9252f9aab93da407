"""padam_jax as a JAX user meets it: validation, state, jit/scan/cond, donation, composition with
optax's wrappers, inject_hyperparams, schedules and pickle-free checkpoints."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import padam_core
from padam_jax import ScaleByPadamState, padam, scale_by_padam, state_from_arrays, state_to_arrays

SHAPES = {"w": (4, 3), "b": (3,)}
LEARNING_RATE = 0.05


def make_params(dtype: Any = jnp.float64, seed: int = 1) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape), dtype) for name, shape in SHAPES.items()}


def make_noise(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = {name: rng.normal(size=(steps, *shape)) for name, shape in SHAPES.items()}
    for values in noise.values():
        values[0] *= 100.0
    return noise


def gradient(params: dict[str, Any], noise: dict[str, Any], t: Any) -> dict[str, Any]:
    return {name: noise[name][t] + 0.5 * params[name] for name in params}


def as_numpy(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def oracle(params: dict[str, jax.Array], grads_per_step: list, **hyperparameters: Any) -> dict:
    """padam_core's float64 NumPy kernel fed the gradient ``grads_per_step[t](params)``."""
    params = as_numpy(params)
    state = padam_core.init(params, amsgrad=hyperparameters.get("amsgrad", True))
    learning_rates = hyperparameters.pop("learning_rates", None)
    partials = hyperparameters.pop("partials", None)
    for t, make_grads in enumerate(grads_per_step):
        if learning_rates is not None:
            hyperparameters["lr"] = learning_rates[t]
        if partials is not None:
            hyperparameters["partial"] = partials[t]
        params, state = padam_core.update(make_grads(params), state, params, **hyperparameters)
    return params


def assert_trees_close(result: Any, expected: Any, tolerance: float = 1e-12) -> None:
    for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(expected), strict=True):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= tolerance * np.max(np.abs(want))


def train_step(optimizer: optax.GradientTransformation):
    def step(params, state, noise, t):
        updates, state = optimizer.update(gradient(params, noise, t), state, params)
        return optax.apply_updates(params, updates), state

    return step


def train(optimizer: optax.GradientTransformation, params: dict, noise: dict, steps: int):
    """``steps`` jitted steps from a fresh state; returns ``(params, state)``."""
    step = jax.jit(train_step(optimizer))
    state = optimizer.init(params)
    for t in range(steps):
        params, state = step(params, state, noise, t)
    return params, state


def noise_gradients(noise: dict, steps: int) -> list:
    """The oracle's gradient functions for steps 0..steps-1 of ``gradient(p, noise, t)``."""
    return [lambda p, t=t: gradient(p, noise, t) for t in range(steps)]


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"partial": 0.7}, "Invalid partial value: 0.7 (expected 0 <= partial <= 0.5)"),
        ({"partial": -0.1}, "Invalid partial value: -0.1"),
        ({"learning_rate": -0.1}, "Invalid learning_rate value: -0.1"),
        ({"learning_rate": float("nan")}, "Invalid learning_rate value: nan"),
        ({"b1": 1.0}, "Invalid b1 value: 1.0 (expected 0 <= b1 < 1)"),
        ({"b2": -0.5}, "Invalid b2 value: -0.5"),
        ({"eps": -1e-8}, "Invalid eps value: -1e-08"),
        ({"weight_decay": -0.01}, "Invalid weight_decay value: -0.01"),
        ({"variant": "adam"}, "Invalid variant value: 'adam'"),
        ({"amsgrad": "yes"}, "Invalid amsgrad value: 'yes' (expected True or False)"),
        ({"maximize": 1}, "Invalid maximize value: 1"),
        ({"mu_dtype": jnp.int32}, "Invalid mu_dtype value: int32"),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_the_argument(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as error:
        padam(**arguments)
    assert message in str(error.value)


def test_arrays_and_schedules_are_not_range_checked() -> None:
    padam(learning_rate=optax.linear_schedule(0.1, 0.0, 10), partial=jnp.asarray(0.25))
    scale_by_padam(b1=jnp.asarray(0.9), b2=jnp.asarray(0.99), eps=jnp.asarray(1e-8))


def test_mismatched_gradients_raise_clear_errors_and_leave_state_usable() -> None:
    optimizer = padam(LEARNING_RATE)
    params = make_params()
    state = optimizer.init(params)
    snapshot = as_numpy(state)
    bad_shape = {"w": jnp.ones((3, 4)), "b": jnp.ones(3)}
    # Shapes and structure are static, so the errors come while tracing, under jit too.
    update = jax.jit(optimizer.update)
    with pytest.raises(ValueError, match=r"gradient \['w'\] has shape \(3, 4\).*\(4, 3\)"):
        update(bad_shape, state, params)
    with pytest.raises(ValueError, match="tree structure does not match"):
        jax.jit(scale_by_padam().update)({"w": jnp.ones((4, 3))}, state[1])
    no_max_state = scale_by_padam(amsgrad=False).init(params)
    with pytest.raises(ValueError, match="created with amsgrad=False"):
        scale_by_padam(amsgrad=True).update(params, no_max_state)
    # Nothing was modified: the state still trains and equals its snapshot.
    jax.tree.map(np.testing.assert_array_equal, as_numpy(state), snapshot)
    update(params, state, params)


# ---- state -------------------------------------------------------------------------------------


def test_state_fields_dtypes_and_amsgrad_off() -> None:
    params = {
        "half": jnp.ones(3, jnp.bfloat16),
        "single": jnp.ones(2, jnp.float32),
        "complex": jnp.ones(2, jnp.complex64),
    }
    state = scale_by_padam().init(params)
    assert isinstance(state, ScaleByPadamState)
    assert state._fields == ("count", "mu", "nu", "nu_max")
    assert state.count.dtype == jnp.int32 and state.count.shape == ()
    assert {k: v.dtype for k, v in state.mu.items()} == {
        "half": jnp.float32,
        "single": jnp.float32,
        "complex": jnp.complex64,
    }
    assert {k: v.dtype for k, v in state.nu.items()} == {
        "half": jnp.float32,
        "single": jnp.float32,
        "complex": jnp.float32,
    }
    assert state.nu_max["complex"].dtype == jnp.float32

    no_max = scale_by_padam(amsgrad=False).init(params)
    assert no_max.nu_max is None
    assert scale_by_padam(mu_dtype=jnp.bfloat16).init(params).mu["single"].dtype == jnp.bfloat16


def test_mu_dtype_bfloat16_stores_mu_in_bfloat16_and_still_trains() -> None:
    params, noise = make_params(jnp.float32), make_noise(30)
    optimizer = padam(LEARNING_RATE, mu_dtype=jnp.bfloat16)
    reference = oracle(params, noise_gradients(noise, 30), lr=LEARNING_RATE)
    params, state = train(optimizer, params, noise, 30)
    assert state[1].mu["w"].dtype == jnp.bfloat16  # chain(decay, scale_by_padam, lr)
    assert params["w"].dtype == jnp.float32
    assert_trees_close(params, reference, tolerance=1e-2)  # mu is rounded to 8 bits each step


def test_init_works_on_abstract_shapes() -> None:
    optimizer = padam(LEARNING_RATE, weight_decay=0.01)
    abstract = {
        "w": jax.ShapeDtypeStruct((4096, 4096), jnp.bfloat16),
        "b": jax.ShapeDtypeStruct((4096,), jnp.float32),
    }
    shapes = jax.eval_shape(optimizer.init, abstract)
    padam_state = shapes[1]  # chain(add_decayed_weights, scale_by_padam, learning rate)
    assert padam_state.mu["w"].shape == (4096, 4096)
    assert padam_state.mu["w"].dtype == jnp.float32
    assert padam_state.nu_max["b"].dtype == jnp.float32
    concrete = optimizer.init(make_params())
    assert jax.tree.structure(jax.eval_shape(optimizer.init, make_params())) == jax.tree.structure(
        concrete
    )


# ---- jit, scan, cond, donation -----------------------------------------------------------------


def test_jit_and_eager_give_the_same_trajectory() -> None:
    optimizer = padam(LEARNING_RATE, weight_decay=0.01, variant="torch")
    noise = make_noise(10)
    eager_step, jitted_step = train_step(optimizer), jax.jit(train_step(optimizer))
    eager = jitted = make_params()
    eager_state = jitted_state = optimizer.init(eager)
    for t in range(10):
        eager, eager_state = eager_step(eager, eager_state, noise, t)
        jitted, jitted_state = jitted_step(jitted, jitted_state, noise, t)
    assert_trees_close(jitted, eager, tolerance=1e-15)
    assert_trees_close(jitted_state, eager_state, tolerance=1e-15)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: padam(optax.cosine_decay_schedule(0.1, 100), weight_decay=0.01),
        lambda: optax.inject_hyperparams(padam)(learning_rate=0.1, partial=0.25),
    ],
    ids=["schedule", "inject_hyperparams"],
)
def test_no_recompilation_after_the_first_call(make_optimizer) -> None:
    optimizer = make_optimizer()
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)  # runs only while tracing
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = make_params(jnp.float32)
    state = optimizer.init(params)
    for scale in (1.0, 2.0, 3.0):
        params, state = step(params, state, jax.tree.map(lambda p, s=scale: s * p, params))
    assert len(traces) == 1
    if hasattr(step, "_cache_size"):  # private jit API: also check the compiled-program cache
        assert step._cache_size() == 1


def test_scan_training_loop_equals_python_loop() -> None:
    optimizer = padam(LEARNING_RATE, weight_decay=0.01, decoupled_weight_decay=True)
    noise = make_noise(20)
    step = train_step(optimizer)
    params = make_params()

    @jax.jit
    def train_in_scan(params, noise):
        def body(carry, t):
            return step(*carry, noise, t), None

        return jax.lax.scan(body, (params, optimizer.init(params)), jnp.arange(20))[0]

    scanned, scanned_state = train_in_scan(params, noise)
    looped, looped_state = params, optimizer.init(params)
    jitted = jax.jit(step)
    for t in range(20):
        looped, looped_state = jitted(looped, looped_state, noise, t)
    assert_trees_close(scanned, looped, tolerance=1e-15)
    assert int(scanned_state[0].count) == 20  # chain(scale_by_padam, decay, lr)


def test_lax_cond_can_skip_or_take_a_step() -> None:
    optimizer = padam(LEARNING_RATE)
    params = make_params()
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def maybe_step(take, params, state):
        def update(operands):
            params, state = operands
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.cond(take, update, lambda operands: operands, (params, state))

    skipped, skipped_state = maybe_step(False, params, state)
    taken, taken_state = maybe_step(True, params, state)
    assert_trees_close(skipped, params, tolerance=0.0)
    assert int(skipped_state[1].count) == 0 and int(taken_state[1].count) == 1
    expected_updates, _ = optimizer.update(grads, state, params)
    assert_trees_close(taken, optax.apply_updates(params, expected_updates), tolerance=1e-15)


def test_donated_buffers_train_like_undonated_ones() -> None:
    optimizer = padam(LEARNING_RATE, weight_decay=0.01)
    noise = make_noise(5)
    step = train_step(optimizer)
    donating = jax.jit(step, donate_argnums=(0, 1))
    plain = jax.jit(step)
    params = make_params()
    donated, donated_state = jax.tree.map(jnp.copy, (params, optimizer.init(params)))
    reference, reference_state = params, optimizer.init(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backends without donation warn and copy instead
        for t in range(5):
            previous = donated
            donated, donated_state = donating(donated, donated_state, noise, t)
            reference, reference_state = plain(reference, reference_state, noise, t)
    assert_trees_close(donated, reference, tolerance=0.0)
    assert_trees_close(donated_state, reference_state, tolerance=0.0)
    if jax.default_backend() == "cpu":
        assert previous["w"].is_deleted()  # the CPU backend does honour donation


# ---- hyperparameters that change ---------------------------------------------------------------


def test_inject_hyperparams_learning_rate_and_partial_change_during_training() -> None:
    optimizer = optax.inject_hyperparams(padam)(
        learning_rate=LEARNING_RATE, partial=0.125, weight_decay=0.01
    )
    params, noise = make_params(), make_noise(40)
    step = jax.jit(train_step(optimizer))
    state = optimizer.init(params)
    learning_rates = [LEARNING_RATE] * 20 + [0.02] * 20
    partials = [0.125] * 20 + [0.3] * 20
    start = params
    for t in range(40):
        if t == 20:
            # Same dtype as the stored value (not a weakly typed scalar): no retracing.
            state.hyperparams["learning_rate"] = jnp.asarray(0.02, jnp.float64)
            state.hyperparams["partial"] = jnp.asarray(0.3, jnp.float64)
        params, state = step(params, state, noise, t)
    reference = oracle(
        start,
        noise_gradients(noise, 40),
        learning_rates=learning_rates,
        partials=partials,
        weight_decay=0.01,
    )
    assert_trees_close(params, reference)
    assert step._cache_size() == 1


def test_partial_as_a_schedule_through_inject_hyperparams() -> None:
    partial_schedule = optax.piecewise_constant_schedule(0.5, {10: 0.25})  # 0.5 then 0.125
    optimizer = optax.inject_hyperparams(padam)(
        learning_rate=LEARNING_RATE, partial=partial_schedule
    )
    params, noise = make_params(), make_noise(20)
    start = params
    params, _ = train(optimizer, params, noise, 20)
    reference = oracle(
        start,
        noise_gradients(noise, 20),
        lr=LEARNING_RATE,
        partials=[0.5] * 10 + [0.125] * 10,
    )
    assert_trees_close(params, reference)


def test_inject_hyperparams_with_bfloat16_params_needs_float32_hyperparameters() -> None:
    params = make_params(jnp.bfloat16)
    # optax stores injected values in the parameters' dtype: b2 = 0.999 would become 1.0.
    with pytest.raises(ValueError, match=r"hyperparam_dtype=jnp\.float32"):
        optax.inject_hyperparams(padam)(learning_rate=LEARNING_RATE).init(params)

    injected = optax.inject_hyperparams(padam, hyperparam_dtype=jnp.float32)(
        learning_rate=LEARNING_RATE
    )
    plain = padam(LEARNING_RATE)
    noise = make_noise(20)
    results = []
    for optimizer in (injected, plain):
        step, trained = jax.jit(train_step(optimizer)), params
        state = optimizer.init(trained)
        for t in range(20):
            trained, state = step(trained, state, noise, t)
        assert trained["w"].dtype == jnp.bfloat16
        results.append(jax.tree.map(lambda x: np.asarray(x, np.float64), trained))
    assert_trees_close(results[0], results[1], tolerance=2e-2)  # a few bfloat16 ulps apart


def test_learning_rate_schedule_matches_oracle() -> None:
    # Halving is exact, so optax's float32 schedule arithmetic is the same inside and outside jit.
    schedule = optax.piecewise_constant_schedule(0.1, {5: 0.5, 10: 0.5, 15: 0.5})
    optimizer = padam(schedule, weight_decay=0.01, decoupled_weight_decay=True)
    params, noise = make_params(), make_noise(20)
    start = params
    params, _ = train(optimizer, params, noise, 20)
    # optax evaluates a schedule at its int32 count before the step: 0 for the first update.
    reference = oracle(
        start,
        noise_gradients(noise, 20),
        learning_rates=[float(schedule(jnp.int32(t))) for t in range(20)],
        weight_decay=0.01,
        decoupled_weight_decay=True,
    )
    assert_trees_close(params, reference)


# ---- composition with optax ---------------------------------------------------------------------


def test_chain_with_clip_by_global_norm() -> None:
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), padam(LEARNING_RATE))
    params, noise = make_params(), make_noise(20)
    start = params
    params, _ = train(optimizer, params, noise, 20)

    def clipped(grads: dict) -> dict:
        norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
        return grads if norm < 1.0 else {n: g / norm for n, g in grads.items()}

    reference = oracle(
        start,
        [lambda p, t=t: clipped(gradient(p, noise, t)) for t in range(20)],
        lr=LEARNING_RATE,
    )
    assert_trees_close(params, reference)


def test_multisteps_averages_micro_batches_into_one_padam_step() -> None:
    micro_steps, steps = 3, 8
    optimizer = optax.MultiSteps(
        padam(LEARNING_RATE, weight_decay=0.01), micro_steps, accumulator_dtype=jnp.float64
    )
    params, noise = make_params(), make_noise(micro_steps * steps)
    step = jax.jit(train_step(optimizer))
    state = optimizer.init(params)
    start = params
    for t in range(micro_steps * steps):
        before = params
        params, state = step(params, state, noise, t)
        if t % micro_steps != micro_steps - 1:
            assert_trees_close(params, before, tolerance=0.0)  # accumulating, no update

    def averaged(params: dict, k: int) -> dict:
        micro = [gradient(params, noise, k * micro_steps + i) for i in range(micro_steps)]
        return {n: sum(g[n] for g in micro) / micro_steps for n in params}

    reference = oracle(
        start,
        [lambda p, k=k: averaged(p, k) for k in range(steps)],
        lr=LEARNING_RATE,
        weight_decay=0.01,
    )
    assert_trees_close(params, reference)


def test_masked_padam_and_weight_decay_mask() -> None:
    params, noise = make_params(), make_noise(10)
    # optax.masked: masked-out leaves pass their gradient through untouched.
    masked = optax.masked(padam(LEARNING_RATE), {"w": True, "b": False})
    state = masked.init(params)
    grads = gradient(params, noise, 0)
    updates, state = masked.update(grads, state, params)
    alone, _ = padam(LEARNING_RATE).update(
        {"w": grads["w"]}, padam(LEARNING_RATE).init({"w": params["w"]}), {"w": params["w"]}
    )
    np.testing.assert_array_equal(updates["b"], grads["b"])
    np.testing.assert_array_equal(updates["w"], alone["w"])

    # The weight decay mask, as optax.adamw's: decay "w" only.
    optimizer = padam(LEARNING_RATE, weight_decay=0.1, mask={"w": True, "b": False})
    start = params
    params, state = train(optimizer, params, noise, 10)
    for name, weight_decay in (("w", 0.1), ("b", 0.0)):
        leaf_noise = {name: noise[name]}
        reference = oracle(
            {name: start[name]},
            [lambda p, t=t, n=leaf_noise: gradient(p, n, t) for t in range(10)],
            lr=LEARNING_RATE,
            weight_decay=weight_decay,
        )
        assert_trees_close({name: params[name]}, reference)


def test_apply_if_finite_skips_a_non_finite_step() -> None:
    optimizer = optax.apply_if_finite(padam(LEARNING_RATE), max_consecutive_errors=3)
    params, noise = make_params(), make_noise(10)
    step = jax.jit(train_step(optimizer))
    state = optimizer.init(params)
    start = params
    bad_noise = {n: v.copy() for n, v in noise.items()}
    bad_noise["w"][4, 0, 0] = np.nan
    for t in range(10):
        before, before_state = params, state
        params, state = step(params, state, bad_noise, t)
        if t == 4:
            assert_trees_close(params, before, tolerance=0.0)
            assert_trees_close(state.inner_state, before_state.inner_state, tolerance=0.0)
    assert int(state.total_notfinite) == 1
    # The run equals one that never saw step 4.
    reference = oracle(
        start,
        [lambda p, t=t: gradient(p, noise, t) for t in range(10) if t != 4],
        lr=LEARNING_RATE,
    )
    assert_trees_close(params, reference)


# ---- checkpoints -------------------------------------------------------------------------------


def test_state_saved_mid_run_and_restored_continues_bitwise(tmp_path) -> None:
    optimizer = optax.inject_hyperparams(padam)(
        learning_rate=optax.cosine_decay_schedule(0.1, 30),
        weight_decay=0.01,
        mu_dtype="bfloat16",  # a string: inject_hyperparams would take jnp.bfloat16 for a schedule
    )
    noise = make_noise(20)
    step = jax.jit(train_step(optimizer))
    params = make_params(jnp.float32)
    state = optimizer.init(params)
    for t in range(10):
        params, state = step(params, state, noise, t)
    path = tmp_path / "checkpoint.npz"
    np.savez(path, **state_to_arrays(state), **{f"params/{n}": v for n, v in params.items()})

    uninterrupted, uninterrupted_state = params, state
    for t in range(10, 20):
        uninterrupted, uninterrupted_state = step(uninterrupted, uninterrupted_state, noise, t)

    with np.load(path, allow_pickle=False) as stored:
        restored_params = {n: jnp.asarray(stored[f"params/{n}"]) for n in SHAPES}
        state_arrays = {k: stored[k] for k in stored.files if not k.startswith("params/")}
    template = jax.eval_shape(optimizer.init, restored_params)
    restored_state = state_from_arrays(state_arrays, like=template)
    for t in range(10, 20):
        restored_params, restored_state = step(restored_params, restored_state, noise, t)
    assert_trees_close(restored_params, uninterrupted, tolerance=0.0)
    assert_trees_close(restored_state, uninterrupted_state, tolerance=0.0)
    assert step._cache_size() == 1  # the restored state has the same types as the live one


def test_mismatched_checkpoint_raises_clear_error() -> None:
    optimizer = padam(LEARNING_RATE)
    arrays = state_to_arrays(optimizer.init(make_params()))
    other_shapes = optimizer.init({"w": jnp.ones((5, 3)), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"entry \[1\].mu\['w'\] has shape \(4, 3\)"):
        state_from_arrays(arrays, like=other_shapes)
    with pytest.raises(ValueError, match="missing"):
        state_from_arrays(
            {k: v for k, v in arrays.items() if "nu_max" not in k},
            like=optimizer.init(make_params()),
        )
    with pytest.raises(ValueError, match=r"dtype float64, expected \(3,\) and float32"):
        state_from_arrays(arrays, like=optimizer.init(make_params(jnp.float32)))
