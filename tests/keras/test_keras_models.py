"""Padam in Keras's training loop: fit, save/load and resume, jit_compile, mixed_float16."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from padam_keras import Padam
from tests.oracle import relative_error

FEATURES, OUTPUTS, BATCH = 8, 3, 16


def _regression_data(batches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches * BATCH, FEATURES)).astype("float32")
    w = rng.normal(size=(FEATURES, OUTPUTS)).astype("float32")
    return x, np.tanh(x @ w).astype("float32")


def _mlp(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(OUTPUTS),
        ]
    )


def _train_batches(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: range) -> None:
    for step in steps:
        batch = slice(step * BATCH, (step + 1) * BATCH)
        model.train_on_batch(x[batch], y[batch])


def test_saved_model_resumes_bitwise(tmp_path: Path) -> None:
    """Save mid-training to .keras, load without custom_objects, continue: bitwise equal."""
    x, y = _regression_data(batches=8)
    model = _mlp()
    model.compile(optimizer=Padam(learning_rate=0.01, l2_weight_decay=1e-3), loss="mse")
    _train_batches(model, x, y, range(4))
    path = tmp_path / "padam_model.keras"
    model.save(path)
    _train_batches(model, x, y, range(4, 8))

    restored = keras.models.load_model(path)
    assert isinstance(restored.optimizer, Padam)
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 4
    _train_batches(restored, x, y, range(4, 8))

    for expected, actual in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)
    pairs = zip(model.optimizer.variables, restored.optimizer.variables, strict=True)
    for expected, actual in pairs:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected)
        )


def test_fit_on_digits_reaches_95_percent() -> None:
    """scikit-learn's bundled 8x8 digits (no download): a small MLP with Padam's paper
    defaults (lr 0.1, p = 1/8), batch 32, reaches >= 95% held-out accuracy in 10 epochs
    (measured 0.97 on each backend)."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = 1400
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=Padam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[:split], y[:split], batch_size=32, epochs=10, verbose=0)
    _, accuracy = model.evaluate(x[split:], y[split:], verbose=0)
    assert accuracy >= 0.95


def test_jit_compile_matches_eager() -> None:
    """model.compile(jit_compile=True) gives the same training: XLA on TensorFlow and JAX,
    torch.compile of the whole train step (optimizer included) on torch (~30 s to compile)."""
    x, y = _regression_data(batches=6)
    weights = {}
    for jit in (False, True):
        model = _mlp()
        model.compile(optimizer=Padam(learning_rate=0.01), loss="mse", jit_compile=jit)
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        weights[jit] = model.get_weights()
    for eager, compiled in zip(weights[False], weights[True], strict=True):
        assert relative_error(compiled, eager) <= 1e-5


def test_mixed_float16_is_finite_and_close_to_float32() -> None:
    """Under the mixed_float16 policy Keras wraps Padam in a LossScaleOptimizer; training stays
    finite and close to the float32 run."""
    x, y = _regression_data(batches=6)
    results = {}
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        model = _mlp()
        model.compile(optimizer=Padam(learning_rate=0.01), loss="mse")
        history = model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
        results[policy] = (model.get_weights(), history.history["loss"], model.optimizer)
    keras.config.set_dtype_policy("float32")
    assert isinstance(results["mixed_float16"][2], keras.optimizers.LossScaleOptimizer)
    assert isinstance(results["mixed_float16"][2].inner_optimizer, Padam)
    mixed_weights, mixed_loss, _ = results["mixed_float16"]
    full_weights, full_loss, _ = results["float32"]
    assert np.all(np.isfinite(mixed_loss))
    np.testing.assert_allclose(mixed_loss, full_loss, rtol=2e-2)
    for mixed, full in zip(mixed_weights, full_weights, strict=True):
        assert np.all(np.isfinite(mixed))
        assert relative_error(mixed, full) <= 2e-2
    assert mixed_loss[-1] < mixed_loss[0]
