"""Save and load a built :class:`padam_keras.Padam`'s state in the shared state file.

The file (``docs/state-format.md``, safetensors) is the one padam_torch, padam_jax and padam_core
read, so a run can move between frameworks. Parameters are matched by order: the optimizer's
variable order (``model.trainable_variables`` when it was built by ``fit`` or ``apply``). The
step count is ``optimizer.iterations`` (which also drives a learning-rate schedule).

>>> import keras
>>> from padam_keras import Padam, load_state, save_state
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
>>> optimizer = Padam(learning_rate=0.1)
>>> optimizer.build(model.trainable_variables)
>>> save_state("/tmp/padam_keras_state.safetensors", optimizer)
>>> load_state("/tmp/padam_keras_state.safetensors", optimizer)
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import keras
import numpy as np

from padam_core.state_file import TensorSpec, numpy_dtype, read_state_file, write_state_file
from padam_keras.optimizer import Padam

__all__ = ["load_state", "save_state"]


class _Slots(NamedTuple):
    """A built Padam's slot variables, one per trainable variable, by state-file moment."""

    exp_avg: list[Any]  # m: optimizer._momentums
    exp_avg_sq: list[Any]  # v: optimizer._velocities
    max_exp_avg_sq: list[Any] | None  # v_hat: optimizer._velocity_hats (None without amsgrad)


def _slots(optimizer: Any) -> tuple[Padam, list[Any], _Slots]:
    """The Padam optimizer (unwrapped from a LossScaleOptimizer), its variables and slots."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(optimizer, Padam):
        raise TypeError(f"expected a padam_keras.Padam, got {type(optimizer).__name__}")
    if not optimizer.built:
        raise ValueError(
            "the optimizer is not built yet: call optimizer.build(model.trainable_variables) "
            "(or train one step) first"
        )
    slots = _Slots(
        exp_avg=list(optimizer._momentums),
        exp_avg_sq=list(optimizer._velocities),
        max_exp_avg_sq=list(optimizer._velocity_hats) if optimizer.amsgrad else None,
    )
    return optimizer, list(optimizer._trainable_variables), slots


def _dtype(variable: Any) -> np.dtype:
    return numpy_dtype(keras.backend.standardize_dtype(variable.dtype))


def _name(variable: Any) -> str:
    return str(getattr(variable, "path", None) or variable.name)


def save_state(path: str | os.PathLike[str], optimizer: Padam) -> None:
    """Write a built ``optimizer``'s state to ``path`` (atomically)."""
    optimizer, variables, slots = _slots(optimizer)
    recorded = {
        "learning_rate": optimizer.learning_rate
        if not isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
        else repr(optimizer._learning_rate),
        "beta_1": optimizer.beta_1,
        "beta_2": optimizer.beta_2,
        "epsilon": optimizer.epsilon,
        # A schedule is recorded by its repr, like a learning-rate schedule (file unchanged).
        "partial": optimizer.partial if isinstance(optimizer.partial, float)
        else repr(optimizer.partial),
        "l2_weight_decay": optimizer.l2_weight_decay,
        "weight_decay": optimizer.weight_decay,
        "maximize": optimizer.maximize,
    }
    recorded = {
        key: value if isinstance(value, (str, bool, type(None))) else float(value)
        for key, value in recorded.items()
    }

    def host(slot_variables: list[Any]) -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(v) for v in slot_variables]

    write_state_file(
        path,
        step=int(keras.ops.convert_to_numpy(optimizer.iterations)),
        exp_avg=host(slots.exp_avg),
        exp_avg_sq=host(slots.exp_avg_sq),
        max_exp_avg_sq=None if slots.max_exp_avg_sq is None else host(slots.max_exp_avg_sq),
        names=[_name(variable) for variable in variables],
        variant=optimizer.variant,
        amsgrad=optimizer.amsgrad,
        hyperparameters=recorded,
        writer=f"padam_keras (keras {keras.__version__}, {keras.backend.backend()})",
    )


def load_state(path: str | os.PathLike[str], optimizer: Padam) -> None:
    """Replace a built ``optimizer``'s slots and iteration count by the state in ``path``.

    The file is checked in full first (count, shapes, dtypes, values, variant, amsgrad); a
    ``ValueError`` leaves the optimizer unchanged. Hyperparameters stay the optimizer's own.
    """
    optimizer, variables, slots = _slots(optimizer)
    specs = [
        TensorSpec(_name(variable), tuple(int(n) for n in variable.shape),
                   _dtype(slots.exp_avg_sq[index]), _dtype(slots.exp_avg[index]))
        for index, variable in enumerate(variables)
    ]  # fmt: skip
    loaded = read_state_file(path, expected=specs, variant=optimizer.variant,
                             amsgrad=optimizer.amsgrad)  # fmt: skip
    assignments = [
        (optimizer.iterations, np.asarray(loaded.step, dtype=_dtype(optimizer.iterations)))
    ]
    for moment, slot_variables in slots._asdict().items():
        if slot_variables is not None:
            assignments.extend(zip(slot_variables, getattr(loaded, moment), strict=True))
    # Convert everything first: a failing conversion leaves every variable as it was.
    tensors = [(variable, keras.ops.convert_to_tensor(value, dtype=variable.dtype))
               for variable, value in assignments]  # fmt: skip
    for variable, tensor in tensors:
        variable.assign(tensor)
