"""Time one optimizer step of Padam and of Keras's Adam(amsgrad=True) on this Keras backend.

Not a test (no timing assertions in tests): the figures in docs/keras.md come from

    KERAS_BACKEND=tensorflow python tests/keras/step_cost.py     # then jax, torch

run from the repository root with ``PYTHONPATH=.:adapters``. 2.1 M float32 parameters (two
1024x1024 kernels and their biases); TensorFlow steps run in ``tf.function(jit_compile=True)``,
JAX steps in jitted ``stateless_apply``, torch steps eagerly on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np

from padam_keras import Padam

SHAPES = [(1024, 1024), (1024,), (1024, 1024), (1024,)]
BACKEND = keras.backend.backend()


def milliseconds_per_step(make_optimizer: Callable[[], keras.optimizers.Optimizer]) -> float:
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32")) for s in SHAPES]
    grads = [keras.ops.convert_to_tensor(rng.normal(size=s).astype("float32")) for s in SHAPES]
    optimizer = make_optimizer()
    optimizer.build(variables)
    steps = 30
    if BACKEND == "jax":
        import jax

        apply = jax.jit(optimizer.stateless_apply)
        state = [v.value for v in optimizer.variables]
        values = [v.value for v in variables]
        jax.block_until_ready(apply(state, grads, values))
        start = time.perf_counter()
        for _ in range(steps):
            out = apply(state, grads, values)
        jax.block_until_ready(out)
    else:
        if BACKEND == "tensorflow":
            import tensorflow as tf

            apply = tf.function(lambda g: optimizer.apply(g, variables), jit_compile=True)
        else:
            apply = lambda g: optimizer.apply(g, variables)  # noqa: E731
        apply(grads)
        start = time.perf_counter()
        for _ in range(steps):
            apply(grads)
        keras.ops.convert_to_numpy(variables[0])  # wait for the last step
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    if BACKEND == "torch":
        import torch

        torch.set_num_threads(1)
    adam = min(milliseconds_per_step(lambda: keras.optimizers.Adam(amsgrad=True)) for _ in "abc")
    padam = min(milliseconds_per_step(Padam) for _ in "abc")
    print(
        f"{BACKEND}: Adam(amsgrad) {adam:.2f} ms/step, Padam(p=1/8) {padam:.2f} ms/step, "
        f"ratio {padam / adam:.2f}"
    )


if __name__ == "__main__":
    main()
