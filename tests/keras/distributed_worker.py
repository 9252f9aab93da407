"""Run by test_keras_distributed.py in a fresh process: train one small model with Padam on one
device and with a multi-device engine, from the same initial weights on the same data, and print
docs/numerics.md's error measure between the two (weights and optimizer slots) as JSON.

    python distributed_worker.py tensorflow-mirrored   # tf.distribute.MirroredStrategy, 2 CPUs
    python distributed_worker.py jax-data-parallel     # keras.distribution.DataParallel, 4 CPUs

A ``-guard`` suffix (``tensorflow-mirrored-guard``) trains with ``skip_nonfinite=True`` on data
with one NaN (in one replica's share of one batch): that step is skipped on every replica.

The environment (KERAS_BACKEND, XLA_FLAGS) is set by the test before this process starts.
"""

from __future__ import annotations

import json
import sys

import numpy as np

DEVICES = {"tensorflow-mirrored": 2, "jax-data-parallel": 4}


def main(engine: str) -> None:
    guard = engine.endswith("-guard")
    engine = engine.removesuffix("-guard")
    if engine == "tensorflow-mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES[engine]
        )
    import keras

    from padam_keras import Padam

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = np.tanh(x @ rng.normal(size=(8, 3))).astype("float32")
    if guard:
        x[17, 0] = np.nan  # batch 2: one replica's half (quarter) of it

    def make_model() -> keras.Model:
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)]
        )

    def train(model: keras.Model) -> tuple[list, list]:
        optimizer = Padam(learning_rate=0.01, l2_weight_decay=1e-3, skip_nonfinite=guard)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        slots = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        return model.get_weights(), slots

    single = train(make_model())
    if engine == "tensorflow-mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            model = make_model()
            distributed = train(model)
        replicas = strategy.num_replicas_in_sync
    else:
        import jax

        devices = jax.devices("cpu")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        model = make_model()
        distributed = train(model)
        replicas = len({d for w in model.weights for d in w.value.devices()})

    def error(a: np.ndarray, b: np.ndarray) -> float:
        scale = float(np.max(np.abs(b)))
        diff = float(np.max(np.abs(a.astype(np.float64) - b)))
        return diff / scale if scale > 0 else diff

    print(
        json.dumps(
            {
                "replicas": replicas,
                "weights": max(error(a, b) for a, b in zip(distributed[0], single[0], strict=True)),
                "slots": max(error(a, b) for a, b in zip(distributed[1], single[1], strict=True)),
                "moved": error(single[0][0], make_model().get_weights()[0]),
                "skipped": int(keras.ops.convert_to_numpy(model.optimizer.skipped_steps)),
                "finite": bool(all(np.all(np.isfinite(w)) for w in distributed[0])),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
