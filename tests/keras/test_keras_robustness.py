"""Issue 10 for Keras (one backend per process): validation, checked checkpoints, ``partial``.

Regression tests for causes 2, 7, 8 and 14 plus the property-based part of the robustness
suite for ``padam_keras.Padam``, its ``from_config`` and ``keras.saving.load_model``; every
rejected call is checked with the shared ``tests.robustness.snapshot.assert_unchanged_on_error``.
"""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from tests.robustness.snapshot import assert_unchanged_on_error

keras = pytest.importorskip("keras")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from padam_keras import Padam  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _model_and_optimizer(**hyperparameters):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = Padam(learning_rate=0.05, **hyperparameters)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.linspace(-1, 1, 24, dtype="float32").reshape(8, 3)
    model.fit(x, x[:, :2], epochs=1, batch_size=4, verbose=0)
    return model, optimizer


# ---- causes 2 and 7 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("epsilon", 0.0), ("epsilon", "1e-8"), ("beta_1", None), ("partial", np.array(0.7)),
     ("learning_rate", np.float32(-1.0)), ("learning_rate", "0.1"), ("l2_weight_decay", 1j),
     ("beta_2", [0.999]), ("partial", True)],
)  # fmt: skip
def test_causes_2_and_7_bad_values_name_the_argument(name, value):
    with pytest.raises(ValueError, match=f"Invalid {name} value"):
        Padam(**{name: value})


def test_cause2_concrete_numpy_values_are_accepted():
    optimizer = Padam(learning_rate=np.float64(0.1), partial=np.array(0.25), beta_1=np.float32(0.9))
    assert optimizer.partial == 0.25 and isinstance(optimizer.partial, float)


# ---- cause 14: partial after build (issue 11: assignable; tests/keras/test_keras_schedules.py)


def test_cause14_setting_partial_after_build_works_and_bad_values_are_refused():
    optimizer = Padam(partial=0.25)
    optimizer.partial = 0.5  # before build: fine, and used
    assert optimizer.partial == 0.5
    _, optimizer = _model_and_optimizer(partial=0.25)
    optimizer.partial = 0.5
    assert optimizer.partial == 0.5
    assert float(keras.ops.convert_to_numpy(optimizer._partial_variable)) == 0.5
    with pytest.raises(ValueError, match="Invalid partial value"):
        optimizer.partial = 0.7
    assert optimizer.partial == 0.5
    assert float(keras.ops.convert_to_numpy(optimizer._partial_variable)) == 0.5


# ---- cause 8: .keras files with values no step reaches ----------------------------------------


def _rewrite_optimizer_variable(source, target, index, value):
    """Copy a .keras file, replacing optimizer variable ``index`` in its weights file."""
    import h5py

    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights = target.with_suffix(".h5")
    weights.write_bytes(members["model.weights.h5"])
    with h5py.File(weights, "r+") as handle:
        dataset = handle["optimizer/vars"][str(index)]
        dataset[...] = np.broadcast_to(np.asarray(value, dtype=dataset.dtype), dataset.shape)
    members["model.weights.h5"] = weights.read_bytes()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _slot_index(optimizer, slot):
    for index, variable in enumerate(optimizer.variables):
        if variable.path.endswith(slot):
            return index
    raise AssertionError(slot)


@pytest.mark.parametrize(
    ("slot", "value", "message"),
    [("iteration", -3, "negative"), ("kernel_momentum", math.nan, "NaN or Inf"),
     ("kernel_velocity", -1.0, "negative"), ("kernel_velocity_hat", -1.0, "negative"),
     ("bias_velocity", math.inf, "NaN or Inf")],
)  # fmt: skip
def test_cause8_a_keras_file_with_bad_optimizer_slots_is_refused(tmp_path, slot, value, message):
    model, optimizer = _model_and_optimizer()
    good = tmp_path / "good.keras"
    model.save(good)
    bad = tmp_path / "bad.keras"
    _rewrite_optimizer_variable(good, bad, _slot_index(optimizer, slot), value)
    with pytest.raises(ValueError, match=message):
        keras.saving.load_model(bad)
    restored = keras.saving.load_model(good)  # the untouched file still loads
    assert int(restored.optimizer.iterations.numpy()) == int(optimizer.iterations.numpy())


def test_cause8_a_rejected_store_changes_no_variable():
    _, optimizer = _model_and_optimizer()
    store = {str(i): np.array(v.numpy()) for i, v in enumerate(optimizer.variables)}
    store[str(_slot_index(optimizer, "bias_velocity"))][...] = -1.0
    assert_unchanged_on_error(lambda: optimizer.load_own_variables(store), optimizer,
                              match="negative")  # fmt: skip


# ---- property-based: constructor, from_config, apply -------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-300, 5e-324, 1e300, -1e-8]),
    st.integers(-3, 3),
)
values = st.one_of(
    numbers, st.none(), st.text(max_size=3), st.booleans(), st.complex_numbers(),
    numbers.map(np.float64), numbers.map(np.array), st.lists(numbers, max_size=2),
)  # fmt: skip
NAMES = ["learning_rate", "beta_1", "beta_2", "epsilon", "partial", "l2_weight_decay"]


@SETTINGS
@given(name=st.sampled_from(NAMES), value=values)
def test_constructor_and_from_config_accept_or_name_the_argument(name, value):
    for build in (lambda: Padam(**{name: value}),
                  lambda: Padam.from_config({**Padam().get_config(), name: value})):  # fmt: skip
        try:
            optimizer = build()
        except ValueError as error:
            assert name in str(error)
            continue
        number = float(getattr(optimizer, name if name != "learning_rate" else "learning_rate"))
        assert math.isfinite(number)


@SETTINGS
@given(scale=st.sampled_from([0.0, 1.0, 1e30, -3e38, math.nan, math.inf]),
       shape=st.sampled_from([(3, 2), (2, 3), (6,)]))  # fmt: skip
def test_apply_gives_finite_weights_or_changes_nothing(scale, shape):
    _, optimizer = _model_and_optimizer()
    variables = optimizer._trainable_variables
    kernel = variables[0]
    with np.errstate(all="ignore"):
        grads = [np.full(shape, scale, "float32"), np.full((2,), scale, "float32")]
    error = assert_unchanged_on_error(lambda: optimizer.apply(grads, variables), optimizer, kernel)
    if isinstance(error, Exception):
        assert "shape" in str(error)
    elif math.isfinite(scale):
        assert np.isfinite(kernel.numpy()).all()
