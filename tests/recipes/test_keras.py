"""docs/recipes.md, Keras: ``fit`` with callbacks (ModelCheckpoint, ReduceLROnPlateau,
LearningRateScheduler) and ``load_model`` of the checkpoint, then training on."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from padam_keras import Padam  # noqa: E402


def test_fit_with_callbacks_then_load_model_and_continue(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    layers = [keras.Input((4,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer=Padam(learning_rate=0.01, partial=0.125), loss="mse")
    path = tmp_path / "best.keras"
    history = model.fit(
        x, y, batch_size=16, epochs=4, verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(path, monitor="loss"),
            keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1),
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
        ],
    )  # fmt: skip
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert float(model.optimizer.learning_rate) < 0.01  # the callbacks set Padam's lr

    restored = keras.models.load_model(path)  # padam_keras is imported: no custom_objects
    assert isinstance(restored.optimizer, Padam)
    assert int(restored.optimizer.iterations) == 16
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations) == 20
