"""Issue 11 for Keras (one backend per process): ``partial`` schedules and ``skip_nonfinite``.

Trajectories are compared with a loop over :func:`padam_core.padam_step` at
``partial=schedule(t)`` (float64 NumPy from float32 inputs, the cross-framework tolerance of
docs/numerics.md); the guard is checked bitwise.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from padam_core import schedules  # noqa: E402
from padam_keras import Padam  # noqa: E402
from tests.keras.keras_testing import (  # noqa: E402
    BACKEND,
    LR,
    TOLERANCE,
    reference_run,
    run_optimizer,
)
from tests.oracle import relative_error  # noqa: E402

STEPS = 40
SCHEDULES = {
    "constant": schedules.constant(0.3),
    "linear": schedules.linear(0.5, 0.125, steps=20),
    "cosine": schedules.cosine(0.5, 0.0625, steps=30),
    "piecewise": schedules.piecewise([10, 25], [0.5, 0.25, 0.125]),
}


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def _problem(seed: int = 3, steps: int = STEPS):
    rng = np.random.default_rng(seed)
    initial = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    grads = [[rng.normal(size=p.shape).astype("float32") for p in initial] for _ in range(steps)]
    return initial, grads



def _reference(initial, grads, partial_of_step, **hyperparameters):
    """reference_run with p changing per step: one padam_step loop per step's p."""
    import padam_core

    params = [p.astype(np.float64) for p in initial]
    state = [(np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)) for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, grad in enumerate(step_grads):
            result = padam_core.padam_step(
                params[i], grad.astype(np.float64), *state[i], t,
                lr=float(np.float32(LR)), partial=partial_of_step(t), **hyperparameters,
            )  # fmt: skip
            params[i] = result.param
            state[i] = (result.exp_avg, result.exp_avg_sq, result.max_exp_avg_sq)
    return params


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_trajectory_matches_padam_core_loop(name: str) -> None:
    schedule = SCHEDULES[name]
    initial, grads = _problem()
    variables = [keras.Variable(p) for p in initial]
    final = run_optimizer(Padam(learning_rate=LR, partial=schedule), variables, grads)
    expected = _reference(initial, grads, schedule)
    for actual, want, start in zip(final, expected, initial, strict=True):
        assert relative_error(actual, want) <= TOLERANCE["float32"]
        assert relative_error(start, want) > 100 * TOLERANCE["float32"]
    # The schedule matters: a constant p = the schedule's first value differs.
    constant = _reference(initial, grads, lambda t: schedule(1))
    if name != "constant":
        assert relative_error(final[0], constant[0]) > 100 * TOLERANCE["float32"]


def _compiled_step(optimizer, variables):
    """One optimizer step as a backend would compile it in fit (traced once, reused)."""
    optimizer.build(variables)
    if BACKEND == "jax":
        import jax

        stateless = jax.jit(optimizer.stateless_apply)

        def step(grads):
            values, state = stateless(
                [v.value for v in optimizer.variables], grads, [v.value for v in variables]
            )
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
            for variable, value in zip(optimizer.variables, state, strict=True):
                variable.assign(value)

        return step
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda grads: optimizer.apply(grads, variables))
    return lambda grads: optimizer.apply(grads, variables)


def _tensors(step_grads):
    return [keras.ops.convert_to_tensor(g) for g in step_grads]


@pytest.mark.parametrize("new", [0.5, "schedule"])
def test_assigning_partial_mid_run_takes_effect(new) -> None:
    """A number assigned after the step is compiled takes effect in that compiled step (it is
    read from the ``partial`` variable); a schedule takes effect at the next trace (eager torch:
    the next step)."""
    initial, grads = _problem(steps=8)
    variables = [keras.Variable(p) for p in initial]
    optimizer = Padam(learning_rate=LR, partial=0.125)
    step = _compiled_step(optimizer, variables)
    for g in grads[:4]:
        step(_tensors(g))
    value = 0.5 if new == 0.5 else schedules.linear(0.5, 0.25, steps=4)
    optimizer.partial = value
    if new != 0.5 and BACKEND != "torch":
        step = _compiled_step(optimizer, variables)  # a schedule is Python code: retrace
    for g in grads[4:]:
        step(_tensors(g))
    expected = _reference(initial, grads, lambda t: 0.125 if t <= 4 else (
        value if isinstance(value, float) else value(t)))  # fmt: skip
    unchanged = _reference(initial, grads, lambda t: 0.125)
    for variable, want, old in zip(variables, expected, unchanged, strict=True):
        assert relative_error(_numpy(variable), want) <= TOLERANCE["float32"]
        assert relative_error(old, want) > 100 * TOLERANCE["float32"]


def _fit_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 3)).astype("float32")
    return x, (x @ rng.normal(size=(3, 2))).astype("float32")


def _model(optimizer):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def test_assigning_partial_between_fits_uses_the_compiled_train_step() -> None:
    x, y = _fit_data()
    kwargs = dict(epochs=1, batch_size=8, verbose=0, shuffle=False)
    a, b, c = (_model(Padam(learning_rate=0.05, partial=0.125)) for _ in range(3))
    for model in (a, b, c):
        model.fit(x, y, **kwargs)
    a.optimizer.partial = 0.5  # the cached train function follows the assignment...
    b.optimizer.partial = 0.5
    b.make_train_function(force=True)  # ...exactly as a freshly traced one
    for model in (a, b, c):
        model.fit(x, y, **kwargs)
    for wa, wb, wc in zip(a.get_weights(), b.get_weights(), c.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
        assert np.max(np.abs(wa - wc)) > 1e-4


def test_keras_file_with_schedule_and_guard_round_trips(tmp_path) -> None:
    x, y = _fit_data()
    x_nan = x.copy()
    x_nan[9, 1] = np.nan  # batch 2 of 4: a NaN gradient, skipped
    schedule = schedules.cosine(0.5, 0.125, steps=6)
    model = _model(Padam(learning_rate=0.05, partial=schedule, skip_nonfinite=True))
    kwargs = dict(epochs=1, batch_size=8, verbose=0, shuffle=False)
    model.fit(x_nan, y, **kwargs)
    assert int(_numpy(model.optimizer.skipped_steps)) == 1
    assert int(_numpy(model.optimizer.iterations)) == 3
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.optimizer.partial == schedule and loaded.optimizer.skip_nonfinite
    assert int(_numpy(loaded.optimizer.skipped_steps)) == 1
    assert int(_numpy(loaded.optimizer.iterations)) == 3
    config = model.optimizer.get_config()
    assert config["partial"] == {"schedule": "cosine", "start": 0.5, "end": 0.125, "steps": 6}
    assert Padam.from_config(config).partial == schedule
    model.fit(x, y, **kwargs)
    loaded.fit(x, y, **kwargs)
    for original, again in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(original, again, rtol=1e-6, atol=1e-7)
    for original, again in zip(
        model.optimizer.variables, loaded.optimizer.variables, strict=True
    ):
        np.testing.assert_allclose(_numpy(original), _numpy(again), rtol=1e-6, atol=1e-7)


def test_plain_callable_partial_runs_but_refuses_get_config() -> None:
    initial, grads = _problem(steps=3)
    variable = keras.Variable(initial[0])
    optimizer = Padam(learning_rate=LR, partial=lambda t: 0.25)
    for g in grads:
        optimizer.apply(_tensors(g[:1]), [variable])
    expected = _reference(initial[:1], [g[:1] for g in grads], lambda t: 0.25)
    assert relative_error(_numpy(variable), expected[0]) <= TOLERANCE["float32"]
    with pytest.raises(ValueError, match=r"padam_core\.schedules"):
        optimizer.get_config()


def _snapshot(variables, optimizer):
    return [_numpy(v).copy() for v in [*variables, *optimizer.variables]]


@pytest.mark.parametrize("where", ["first", "last"])
def test_guard_skips_a_nan_step_bitwise_and_counts_it(where: str) -> None:
    initial, grads = _problem(steps=6)
    bad = [g.copy() for g in grads[3]]
    bad[0 if where == "first" else 1][0] = np.nan if where == "first" else np.inf
    variables = [keras.Variable(p) for p in initial]
    optimizer = Padam(learning_rate=LR, partial=schedules.linear(0.5, 0.125, 5),
                      skip_nonfinite=True)  # fmt: skip
    step = _compiled_step(optimizer, variables)
    for g in grads[:3]:
        step(_tensors(g))
    before = _snapshot(variables, optimizer)
    step(_tensors(bad))
    after = _snapshot(variables, optimizer)
    skipped_index = len(variables) + [id(v) for v in optimizer.variables].index(
        id(optimizer.skipped_steps)
    )
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        if index == skipped_index:
            assert int(new) == int(old) + 1 == 1
        else:
            np.testing.assert_array_equal(old, new)
    for g in grads[3:]:
        step(_tensors(g))
    # == a run that never saw the bad gradients (same optimizer, same compiled kind of step).
    clean_variables = [keras.Variable(p) for p in initial]
    clean = Padam(learning_rate=LR, partial=schedules.linear(0.5, 0.125, 5))
    clean_step = _compiled_step(clean, clean_variables)
    for g in grads:
        clean_step(_tensors(g))
    for guarded, plain in zip(variables, clean_variables, strict=True):
        np.testing.assert_allclose(_numpy(guarded), _numpy(plain), rtol=1e-6, atol=1e-7)
    assert int(_numpy(optimizer.iterations)) == int(_numpy(clean.iterations)) == 6
    assert int(_numpy(optimizer.skipped_steps)) == 1


def test_guard_in_fit_skips_the_nan_batch() -> None:
    x, y = _fit_data()
    x_nan = x.copy()
    x_nan[17, 0] = np.nan  # batch 3 of 4
    kwargs = dict(batch_size=8, verbose=0, shuffle=False)
    guarded = _model(Padam(learning_rate=0.05, skip_nonfinite=True))
    guarded.fit(x_nan, y, epochs=1, **kwargs)
    assert int(_numpy(guarded.optimizer.skipped_steps)) == 1
    assert int(_numpy(guarded.optimizer.iterations)) == 3
    keep = np.r_[0:16, 24:32]  # the same run without that batch
    clean = _model(Padam(learning_rate=0.05))
    clean.fit(x[keep], y[keep], epochs=1, **kwargs)
    for a, b in zip(guarded.get_weights(), clean.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert all(np.all(np.isfinite(w)) for w in guarded.get_weights())


def test_guard_off_nan_propagates_like_keras_adam_amsgrad() -> None:
    initial, grads = _problem(steps=2)
    bad = [g.copy() for g in grads[1]]
    bad[0][1, 2] = np.nan
    results = []
    for optimizer in (
        Padam(learning_rate=0.01, partial=0.5, variant="reference", epsilon=1e-7),
        keras.optimizers.Adam(learning_rate=0.01, amsgrad=True, epsilon=1e-7),
    ):
        variables = [keras.Variable(p) for p in initial]
        optimizer.apply(_tensors(grads[0]), variables)
        optimizer.apply(_tensors(bad), variables)
        results.append(([_numpy(v) for v in variables], int(_numpy(optimizer.iterations))))
    (padam, padam_steps), (adam, adam_steps) = results
    assert padam_steps == adam_steps == 2
    for p, a in zip(padam, adam, strict=True):
        np.testing.assert_array_equal(np.isnan(p), np.isnan(a))
    assert np.isnan(padam[0]).sum() == 1 and not np.isnan(padam[1]).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"skip_nonfinite": "yes"}, "Invalid skip_nonfinite value"),
     ({"skip_nonfinite": 1}, "Invalid skip_nonfinite value"),
     ({"partial": "0.1"}, "Invalid partial value")],
)  # fmt: skip
def test_bad_arguments_are_refused(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        Padam(**kwargs)


def test_a_schedule_out_of_range_raises_and_changes_nothing() -> None:
    initial, grads = _problem(steps=2)
    variables = [keras.Variable(p) for p in initial]
    optimizer = Padam(learning_rate=LR, skip_nonfinite=True)
    optimizer.apply(_tensors(grads[0]), variables)
    optimizer.partial = lambda t: 0.7
    before = _snapshot(variables, optimizer)
    message = r"partial schedule .* at step .*0\.7 \(expected 0 <= partial <= 0\.5\)"
    with pytest.raises(ValueError, match=message):
        optimizer.apply(_tensors(grads[1]), variables)
    for old, new in zip(before, _snapshot(variables, optimizer), strict=True):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match="Invalid partial value"):
        optimizer.partial = "0.1"


def test_reference_run_helper_agrees_with_the_per_step_loop() -> None:
    """The per-step reference equals keras_testing.reference_run at a constant p."""
    initial, grads = _problem(steps=5)
    a = _reference(initial, grads, lambda t: 0.125)
    b = reference_run(initial, grads, partial=0.125)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_store_without_the_new_trailing_variables_still_loads() -> None:
    """A .keras store written before ``partial``/``skipped_steps`` existed (or Adam's list)."""
    initial, grads = _problem(steps=3)
    variables = [keras.Variable(p) for p in initial]
    source = Padam(learning_rate=LR, partial=0.25)
    for g in grads:
        source.apply(_tensors(g), variables)
    store = {str(i): _numpy(v) for i, v in enumerate(source.variables[:-2])}
    target = Padam(learning_rate=LR, partial=0.125, skip_nonfinite=True)
    target.build([keras.Variable(p) for p in initial])
    target.load_own_variables(store)
    for a, b in zip(source.variables[:-2], target.variables[:-2], strict=True):
        np.testing.assert_array_equal(_numpy(a), _numpy(b))
    assert float(_numpy(target._partial_variable)) == 0.125  # the config's p, not the file's
    assert int(_numpy(target.skipped_steps)) == 0
