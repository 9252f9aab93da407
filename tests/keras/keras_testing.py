"""Helpers for the Keras tests: the padam_core reference run and numerics.md's error measure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

import padam_core

BACKEND = keras.backend.backend()
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}

# Keras stores a float learning rate in a float32 variable, so the reference uses that value.
LR = 0.1
LR_AS_STORED = float(np.float32(LR))


def float64_available() -> bool:
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


def reference_run(
    initial: Sequence[np.ndarray],
    grads: Sequence[Sequence[np.ndarray]],
    *,
    learning_rate: float | Callable[[int], float] = LR_AS_STORED,
    **hyperparameters: Any,
) -> list[np.ndarray]:
    """padam_core.padam_step run in NumPy float64 (complex128) from ``initial`` over
    ``grads[t][i]``.

    Inputs are taken as given (round them to the tested dtype first); ``learning_rate`` may be
    a function of the step t = 1, 2, ... (a schedule).
    """
    amsgrad = hyperparameters.get("amsgrad", True)
    params = [np.asarray(p).astype(np.result_type(p, np.float64)) for p in initial]
    # m like the parameter; v and v_hat real (they hold |g|^2 for a complex parameter).
    state = [
        (np.zeros_like(p), np.zeros(p.shape), np.zeros(p.shape) if amsgrad else None)
        for p in params
    ]
    for t, step_grads in enumerate(grads, start=1):
        lr = learning_rate(t) if callable(learning_rate) else learning_rate
        for i, grad in enumerate(step_grads):
            m, v, v_hat = state[i]
            result = padam_core.padam_step(
                params[i],
                grad.astype(np.result_type(grad, np.float64)),
                m,
                v,
                v_hat,
                t,
                lr=lr,
                **hyperparameters,
            )
            params[i] = result.param
            state[i] = (result.exp_avg, result.exp_avg_sq, result.max_exp_avg_sq)
    return params


def run_optimizer(
    optimizer: keras.optimizers.Optimizer,
    variables: Sequence[keras.Variable],
    grads: Sequence[Sequence[np.ndarray]],
) -> list[np.ndarray]:
    """Apply ``grads[t]`` to ``variables`` for every t; return the final values.

    On JAX the steps run through ``jax.jit(optimizer.stateless_apply)`` (how Keras trains on
    JAX), on TensorFlow through ``tf.function(optimizer.apply)`` (how it trains there), on torch
    through eager ``optimizer.apply``.
    """
    dtypes = [v.dtype for v in variables]

    def tensors_of(step_grads: Sequence[np.ndarray]) -> list:
        return [keras.ops.convert_to_tensor(g, d) for g, d in zip(step_grads, dtypes, strict=True)]

    if BACKEND == "jax":
        import jax

        optimizer.build(variables)
        step = jax.jit(optimizer.stateless_apply)
        values = [v.value for v in variables]
        state = [v.value for v in optimizer.variables]
        for step_grads in grads:
            values, state = step(state, tensors_of(step_grads), values)
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, state, strict=True):
            variable.assign(value)
    else:
        if BACKEND == "tensorflow":
            import tensorflow as tf

            # One traced graph for all steps (eager TensorFlow dispatch is ~3x slower).
            optimizer.build(variables)
            apply = tf.function(lambda tensors: optimizer.apply(tensors, variables))
        else:
            apply = lambda tensors: optimizer.apply(tensors, variables)  # noqa: E731
        for step_grads in grads:
            apply(tensors_of(step_grads))
    return [keras.ops.convert_to_numpy(v) for v in variables]
