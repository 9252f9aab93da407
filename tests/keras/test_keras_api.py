"""Padam as a Keras user meets it: arguments, errors, slots, serialization, the namespace shim."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import padam_core
from padam_keras import Padam, keras_ops_namespace
from tests.keras.keras_testing import BACKEND, TOLERANCE, reference_run, run_optimizer
from tests.oracle import relative_error


def _numpy(value) -> np.ndarray:
    return keras.ops.convert_to_numpy(value)


# ---- hyperparameters -------------------------------------------------------------------------


def test_defaults_follow_the_spec_not_keras_adam() -> None:
    optimizer = Padam()
    assert optimizer.epsilon == 1e-8  # Keras's Adam uses 1e-7
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.partial) == (0.9, 0.999, 0.125)
    assert optimizer.amsgrad is True and optimizer.variant == "torch"
    assert optimizer.l2_weight_decay == 0.0 and optimizer.weight_decay is None
    assert float(_numpy(optimizer.learning_rate)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learning_rate": -0.1}, "Invalid learning_rate value: -0.1"),
        ({"beta_1": 1.0}, "Invalid beta_1 value: 1.0 (expected 0 <= beta_1 < 1)"),
        ({"beta_2": -0.5}, "Invalid beta_2 value"),
        ({"epsilon": float("nan")}, "Invalid epsilon value"),
        ({"partial": 0.7}, "Invalid partial value: 0.7 (expected 0 <= partial <= 0.5)"),
        ({"l2_weight_decay": -1.0}, "Invalid l2_weight_decay value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"variant": "adamw"}, "Invalid variant value: 'adamw'"),
        ({"amsgrad": "yes"}, "Invalid amsgrad value"),
        ({"maximize": 1}, "Invalid maximize value"),
        ({"beta_1": "0.9"}, "Invalid beta_1 value: '0.9' (expected a real number)"),
        ({"weight_decay": 0.1, "l2_weight_decay": 0.1}, "at most one of them"),
    ],
)
def test_invalid_hyperparameter_raises_naming_the_keras_argument(kwargs, message) -> None:
    with pytest.raises(ValueError) as error:
        Padam(**kwargs)
    assert message in str(error.value)


def test_integer_learning_rate_is_accepted() -> None:
    assert float(_numpy(Padam(learning_rate=1).learning_rate)) == 1.0


# ---- slots and state -------------------------------------------------------------------------


def test_slots_are_built_with_keras_names_and_state_dtypes() -> None:
    kernel = keras.Variable(np.ones((2, 3)), dtype="float32", name="kernel")
    half = keras.Variable(np.ones(4), dtype="float16", name="half")
    optimizer = Padam()
    optimizer.build([kernel, half])
    names = [v.name for v in optimizer.variables]
    for slot in ("momentum", "velocity", "velocity_hat"):
        assert sum(name.endswith(slot) for name in names) == 2
    # float16 parameters keep float32 state (numerics.md: eps = 1e-8 would underflow in float16).
    state = optimizer._momentums + optimizer._velocities + optimizer._velocity_hats
    assert sorted(v.dtype for v in state) == ["float32"] * 6
    no_max = Padam(amsgrad=False)
    no_max.build([kernel])
    assert not any(v.name.endswith("velocity_hat") for v in no_max.variables)


def test_gradient_of_wrong_shape_raises_and_changes_nothing() -> None:
    kernel = keras.Variable(np.ones((2, 3), dtype="float32"))
    bias = keras.Variable(np.ones(3, dtype="float32"))
    optimizer = Padam()
    optimizer.apply([keras.ops.ones((2, 3)), keras.ops.ones(3)], [kernel, bias])
    before = [_numpy(v).copy() for v in [kernel, bias, *optimizer.variables]]
    with pytest.raises(ValueError, match=r"Gradient shape \(1,\) does not match the shape \(3,\)"):
        optimizer.apply([keras.ops.ones((2, 3)), keras.ops.ones(1)], [kernel, bias])
    after = [_numpy(v) for v in [kernel, bias, *optimizer.variables]]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_adam_amsgrad_state_moves_into_padam_with_set_weights() -> None:
    """Same slot order as Adam(amsgrad=True): at p = 1/2 Padam continues Adam's run."""
    rng = np.random.default_rng(3)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(6)]
    adam_var, padam_var = keras.Variable(start), keras.Variable(start)
    adam = keras.optimizers.Adam(learning_rate=0.01, amsgrad=True, epsilon=1e-8)
    for g in grads[:5]:
        adam.apply([keras.ops.convert_to_tensor(g)], [adam_var])
    padam = Padam(learning_rate=0.01, partial=0.5, epsilon=1e-8, variant="reference")
    padam.build([padam_var])
    padam.set_weights([_numpy(v) for v in adam.variables])
    padam_var.assign(adam_var)
    adam.apply([keras.ops.convert_to_tensor(grads[5])], [adam_var])
    padam.apply([keras.ops.convert_to_tensor(grads[5])], [padam_var])
    assert int(_numpy(padam.iterations)) == 6
    assert relative_error(_numpy(padam_var), _numpy(adam_var)) <= 1e-6


@pytest.mark.skipif(BACKEND != "tensorflow", reason="IndexedSlices gradients are TensorFlow's")
def test_indexed_slices_gradient_equals_its_dense_form() -> None:
    import tensorflow as tf

    start = np.arange(12, dtype="float32").reshape(4, 3)
    sparse = tf.IndexedSlices(tf.ones((2, 3)), tf.constant([0, 2]), tf.constant([4, 3]))
    sparse_var, dense_var = keras.Variable(start), keras.Variable(start)
    Padam().apply([sparse], [sparse_var])
    Padam().apply([tf.convert_to_tensor(sparse)], [dense_var])
    np.testing.assert_array_equal(_numpy(sparse_var), _numpy(dense_var))
    assert not np.array_equal(_numpy(sparse_var), start)


def test_complex_variables_follow_the_kernel_convention() -> None:
    """v from |g|^2 (real slots), as padam_core; TensorFlow refuses with a clear error."""
    rng = np.random.default_rng(21)
    start = (rng.normal(size=6) + 1j * rng.normal(size=6)).astype("complex64")
    grads = [
        [(rng.normal(size=6) + 1j * rng.normal(size=6)).astype("complex64")] for _ in range(30)
    ]
    variable = keras.Variable(start, dtype="complex64")
    optimizer = Padam()
    if BACKEND == "tensorflow":
        with pytest.raises(ValueError, match="complex variables"):
            optimizer.build([variable])
        return
    final = run_optimizer(optimizer, [variable], grads)[0]
    slot_dtypes = sorted(v.dtype for v in optimizer._velocities + optimizer._velocity_hats)
    assert slot_dtypes == ["float32", "float32"]
    expected = reference_run([start], grads)[0]
    assert relative_error(final, expected) <= TOLERANCE["float32"]
    assert relative_error(start, expected) > 1e-3


# ---- float16 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_step_is_the_float32_step_rounded_once(dtype: str) -> None:
    rng = np.random.default_rng(5)
    start = rng.normal(size=(8,)).astype("float32")
    grads = [rng.normal(size=(8,)).astype("float32") for _ in range(3)]
    variable = keras.Variable(start, dtype=dtype)
    optimizer = Padam()
    # Reference: float32 kernel run from the same (rounded) start, rounded once per step.
    param = _numpy(keras.ops.cast(variable, "float32"))
    zeros = np.zeros_like(param)
    m, v, v_hat = zeros, zeros, zeros
    for t, grad in enumerate(grads, start=1):
        grad_lp = keras.ops.cast(grad, dtype)
        optimizer.apply([grad_lp], [variable])
        grad32 = _numpy(keras.ops.cast(grad_lp, "float32"))
        result = padam_core.padam_step(param, grad32, m, v, v_hat, t, lr=float(np.float32(0.1)))
        param = _numpy(keras.ops.cast(keras.ops.cast(result.param, dtype), "float32"))
        m, v, v_hat = result.exp_avg, result.exp_avg_sq, result.max_exp_avg_sq
        actual = _numpy(keras.ops.cast(variable, "float32"))
        ulp = np.abs(param) * (2.0**-10 if dtype == "float16" else 2.0**-7)
        assert np.all(np.abs(actual - param) <= ulp), f"step {t}"


def test_zero_gradients_never_give_nan_in_float16() -> None:
    variable = keras.Variable(np.linspace(-1, 1, 6), dtype="float16")
    optimizer = Padam()
    for _ in range(20):
        optimizer.apply([keras.ops.zeros((6,), dtype="float16")], [variable])
    values = _numpy(variable).astype("float32")
    assert np.all(np.isfinite(values))
    np.testing.assert_array_equal(values, np.linspace(-1, 1, 6).astype("float16"))


def test_loss_scale_optimizer_with_zero_gradients_gives_no_nan() -> None:
    """(On JAX through stateless_apply: Keras's eager LossScaleOptimizer.apply leaks a tracer
    there with any inner optimizer, Adam included.)"""
    variable = keras.Variable(np.linspace(-1, 1, 6), dtype="float32")
    optimizer = keras.optimizers.LossScaleOptimizer(Padam())
    run_optimizer(optimizer, [variable], [[np.zeros(6, "float32")]] * 5)
    np.testing.assert_array_equal(_numpy(variable), np.linspace(-1, 1, 6).astype("float32"))
    assert np.all(np.isfinite(np.concatenate([_numpy(v).ravel() for v in optimizer.variables])))


# ---- serialization ---------------------------------------------------------------------------


def test_config_round_trips_through_keras_serialization() -> None:
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100)
    optimizer = Padam(
        learning_rate=schedule,
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-6,
        partial=0.25,
        amsgrad=False,
        variant="optax",
        l2_weight_decay=0.01,
        maximize=True,
        clipnorm=1.0,
        use_ema=True,
        gradient_accumulation_steps=2,
        name="my_padam",
    )
    config = optimizer.get_config()
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == "padam>Padam"
    restored = keras.optimizers.deserialize(serialized)  # no custom_objects
    assert isinstance(restored, Padam)
    assert restored.get_config() == config
    assert Padam.from_config(config).get_config() == config
    for key, value in {
        "partial": 0.25,
        "variant": "optax",
        "l2_weight_decay": 0.01,
        "maximize": True,
        "amsgrad": False,
        "epsilon": 1e-6,
    }.items():
        assert config[key] == value
    assert isinstance(restored._learning_rate, keras.optimizers.schedules.CosineDecay)


# ---- the keras.ops namespace shim -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["reference", "torch", "optax"])
def test_kernel_through_the_keras_ops_shim_matches_numpy(variant: str) -> None:
    """The shim (used on TensorFlow) runs the kernel on this backend's tensors, with the step
    count as a tensor, and matches the NumPy float64 reference."""
    rng = np.random.default_rng(9)
    start = rng.normal(size=(5, 2)).astype("float32")
    grads = [[g] for g in [rng.normal(size=(5, 2)).astype("float32") for _ in range(20)]]
    xp = keras_ops_namespace
    param = keras.ops.convert_to_tensor(start)
    m = v = v_hat = keras.ops.zeros((5, 2))
    for t, (grad,) in enumerate(grads, start=1):
        param, m, v, v_hat = padam_core.padam_step(
            param,
            keras.ops.convert_to_tensor(grad),
            m,
            v,
            v_hat,
            keras.ops.convert_to_tensor(t, dtype="int32"),
            lr=0.1,
            variant=variant,
            partial=0.3,
            xp=xp,
        )
    assert keras.backend.standardize_dtype(param.dtype) == "float32"
    expected = reference_run([start], grads, learning_rate=0.1, variant=variant, partial=0.3)
    assert relative_error(_numpy(param), expected[0]) <= TOLERANCE["float32"]


def test_shim_isdtype_and_dtypes() -> None:
    xp = keras_ops_namespace
    assert xp.isdtype(xp.float32, "real floating")
    assert not xp.isdtype(xp.float32, "complex floating")
    assert xp.isdtype(xp.complex64, ("integral", "complex floating"))
    assert xp.isdtype(keras.ops.ones(1, dtype="int32").dtype, "signed integer")
    assert keras.ops.ones(1, dtype="float16").dtype == xp.float16
