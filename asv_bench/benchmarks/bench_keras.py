"""asv benchmarks of padam_keras beside keras.optimizers.Adam(amsgrad=True).

Keras fixes its backend once per process, so this module times the backend of the process asv
runs (``KERAS_BACKEND``, TensorFlow by default); ``asv_bench/compare.py --rows keras`` measures
every backend, each in its own subprocess. ``setup`` builds the variables and applies the first
step (tracing, XLA compilation); every ``time_apply`` is one ``optimizer.apply`` on 1M float32
parameters of a 512-1024-512-10 MLP.
"""

from __future__ import annotations

import os

SHAPES = [(512, 1024), (1024,), (1024, 512), (512,), (512, 10), (10,)]
if os.environ.get("PADAM_BENCH_LARGE"):
    SHAPES = [*SHAPES, (2048, 2048), (2048,)]


class KerasApply:
    """optimizer.apply(grads, variables) for Padam and Adam(amsgrad=True)."""

    params = (["padam", "keras_adam_amsgrad"],)
    param_names = ("optimizer",)
    timeout = 300

    def setup(self, optimizer: str) -> None:
        try:
            import keras
            import numpy as np

            from padam_keras import Padam
        except ImportError as error:
            raise NotImplementedError(f"needs keras: {error}") from None
        rng = np.random.default_rng(0)
        self.variables = [
            keras.Variable(rng.normal(size=shape).astype("float32")) for shape in SHAPES
        ]
        self.grads = [
            keras.ops.convert_to_tensor(0.01 * rng.normal(size=shape).astype("float32"))
            for shape in SHAPES
        ]
        if optimizer == "padam":
            self.optimizer = Padam(learning_rate=1e-3)
        else:
            self.optimizer = keras.optimizers.Adam(learning_rate=1e-3, amsgrad=True)
        self.optimizer.build(self.variables)
        self.time_apply(optimizer)

    def time_apply(self, optimizer: str) -> None:
        self.optimizer.apply(self.grads, self.variables)
