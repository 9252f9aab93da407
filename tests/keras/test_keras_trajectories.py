"""Padam's Keras trajectories equal the padam_core reference (NumPy float64), numerics.md's bounds.

Every variant x amsgrad x weight-decay form, plus the partial powers that take the kernel's
other code paths, over 100 steps on float32 variables (and float64 where the backend has it).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from padam_keras import Padam
from tests.keras.keras_testing import (
    LR,
    TOLERANCE,
    float64_available,
    reference_run,
    run_optimizer,
)
from tests.oracle import gradient_sequence, relative_error

STEPS = 100
SHAPES = {"kernel": (4, 3), "bias": (5,)}

# (padam_keras arguments, padam_core arguments) for one weight-decay form.
DECAYS = {
    "none": ({}, {}),
    "l2": ({"l2_weight_decay": 0.01}, {"weight_decay": 0.01}),
    "decoupled": (
        {"weight_decay": 0.05},
        {"weight_decay": 0.05, "decoupled_weight_decay": True},
    ),
}
CASES = [
    {"variant": variant, "amsgrad": amsgrad, "decay": decay}
    for variant, amsgrad, decay in itertools.product(
        ("reference", "torch", "optax"), (True, False), DECAYS
    )
] + [
    # partial = 0 (exactly 1), 1/2 and 1/16 (square-root chains), 0.3 (pow); maximize.
    {"variant": "reference", "amsgrad": True, "decay": "none", "partial": 0.0},
    {"variant": "torch", "amsgrad": True, "decay": "l2", "partial": 0.5},
    {"variant": "optax", "amsgrad": True, "decay": "none", "partial": 0.0625},
    {"variant": "reference", "amsgrad": False, "decay": "decoupled", "partial": 0.3},
    {"variant": "torch", "amsgrad": True, "decay": "none", "maximize": True},
]


def _case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


def _problem(dtype: str, seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial values and a 100-step gradient sequence, rounded to ``dtype``."""
    rng = np.random.default_rng(seed)
    initial = [rng.normal(size=shape).astype(dtype) for shape in SHAPES.values()]
    per_variable = [
        gradient_sequence(SHAPES["kernel"], STEPS, seed=seed + 1, kind="spiky"),
        gradient_sequence(SHAPES["bias"], STEPS, seed=seed + 2, kind="noisy"),
    ]
    grads = [[g[t].astype(dtype) for g in per_variable] for t in range(STEPS)]
    return initial, grads


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_trajectory_matches_padam_core_reference(case: dict) -> None:
    case = dict(case)
    keras_decay, core_decay = DECAYS[case.pop("decay")]
    dtypes = ["float32"] + (["float64"] if float64_available() else [])
    problems = {dtype: _problem(dtype, seed=7) for dtype in dtypes}
    # Both dtypes in one optimizer: one apply per step updates every variable.
    variables = [
        keras.Variable(value, dtype=dtype) for dtype in dtypes for value in problems[dtype][0]
    ]
    grads = [[g for dtype in dtypes for g in problems[dtype][1][t]] for t in range(STEPS)]
    optimizer = Padam(learning_rate=LR, **case, **keras_decay)
    final = run_optimizer(optimizer, variables, grads)

    for offset, dtype in enumerate(dtypes):
        initial, dtype_grads = problems[dtype]
        expected = reference_run(initial, dtype_grads, **case, **core_decay)
        for i, name in enumerate(SHAPES):
            actual = final[offset * len(SHAPES) + i]
            assert actual.dtype == np.dtype(dtype)
            error = relative_error(actual, expected[i])
            assert error <= TOLERANCE[dtype], f"{name} {dtype}: relative error {error:.3g}"
            # The run moved the parameter: the comparison is not trivially satisfied.
            assert relative_error(initial[i], expected[i]) > 100 * TOLERANCE["float32"]


def test_half_partial_reference_equals_keras_adam_amsgrad() -> None:
    """p = 1/2, variant "reference", amsgrad: keras.optimizers.Adam(amsgrad=True, epsilon=eps)."""
    initial, grads = _problem("float32", seed=11)
    epsilon, learning_rate = 1e-8, 0.01
    padam_vars = [keras.Variable(v) for v in initial]
    adam_vars = [keras.Variable(v) for v in initial]
    padam = run_optimizer(
        Padam(learning_rate=learning_rate, partial=0.5, epsilon=epsilon, variant="reference"),
        padam_vars,
        grads,
    )
    adam = run_optimizer(
        keras.optimizers.Adam(learning_rate=learning_rate, amsgrad=True, epsilon=epsilon),
        adam_vars,
        grads,
    )
    for actual, expected, start in zip(padam, adam, initial, strict=True):
        assert relative_error(actual, expected) <= TOLERANCE["float32"]
        assert relative_error(start, expected) > 1e-3


def test_learning_rate_schedule_follows_iterations() -> None:
    """A LearningRateSchedule is evaluated at iterations = t - 1, as for Keras's optimizers."""
    initial, grads = _problem("float32", seed=13)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    variables = [keras.Variable(v) for v in initial]
    final = run_optimizer(Padam(learning_rate=schedule), variables, grads)
    expected = reference_run(
        initial, grads, learning_rate=lambda t: float(np.float32(0.1 * 0.5 ** ((t - 1) / 10)))
    )
    for actual, reference in zip(final, expected, strict=True):
        assert relative_error(actual, reference) <= TOLERANCE["float32"]


def test_global_clipnorm_and_gradient_accumulation_come_from_the_base_class() -> None:
    """Clipping and accumulation happen before the kernel sees the gradient."""
    initial, grads = _problem("float32", seed=17)
    grads = grads[:40]
    variables = [keras.Variable(v) for v in initial]
    optimizer = Padam(learning_rate=LR, global_clipnorm=1.0, gradient_accumulation_steps=2)
    final = run_optimizer(optimizer, variables, grads)

    averaged = [
        [(a.astype(np.float64) + b) / 2 for a, b in zip(grads[t], grads[t + 1], strict=True)]
        for t in range(0, len(grads), 2)
    ]
    clipped = []
    for step_grads in averaged:
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in step_grads))
        clipped.append([g * min(1.0, 1.0 / norm) for g in step_grads])
    expected = reference_run(initial, clipped)
    for actual, reference in zip(final, expected, strict=True):
        assert relative_error(actual, reference) <= TOLERANCE["float32"]
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == len(averaged)


def test_exclude_from_weight_decay_applies_to_both_forms() -> None:
    initial, grads = _problem("float32", seed=19)
    grads = grads[:20]
    for keras_decay in ({"l2_weight_decay": 0.5}, {"weight_decay": 0.5}):
        kernel = keras.Variable(initial[0], name="kernel")
        bias = keras.Variable(initial[1], name="bias")
        optimizer = Padam(learning_rate=LR, **keras_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        final = run_optimizer(optimizer, [kernel, bias], grads)
        undecayed = reference_run(initial, grads)
        assert relative_error(final[1], undecayed[1]) <= TOLERANCE["float32"]
        assert relative_error(final[0], undecayed[0]) > 1e-3
