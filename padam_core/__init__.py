"""padam_core: the canonical Padam optimizer step, for any array API namespace.

Pure functions (:func:`padam_step`, :func:`init`, :func:`update`) run on NumPy, CuPy, torch,
JAX and array_api_strict arrays; :class:`Padam` is a stateful optimizer for NumPy/CuPy arrays
that updates them in place and saves its state without pickle. See :mod:`padam_core.kernel` for
the maths and the numerics decisions.
"""

from padam_core import schedules
from padam_core.functional import PadamState, init, update
from padam_core.guard import all_finite
from padam_core.hyperparameters import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_VARIANT,
    DEFAULT_WEIGHT_DECAY,
    VARIANTS,
    validate_hyperparameters,
)
from padam_core.kernel import StepResult, bias_correction, compute_dtype, padam_step, partial_power
from padam_core.optimizer import Padam

__all__ = [
    "DEFAULT_B1",
    "DEFAULT_B2",
    "DEFAULT_EPS",
    "DEFAULT_LR",
    "DEFAULT_PARTIAL",
    "DEFAULT_VARIANT",
    "DEFAULT_WEIGHT_DECAY",
    "VARIANTS",
    "Padam",
    "PadamState",
    "StepResult",
    "all_finite",
    "bias_correction",
    "compute_dtype",
    "init",
    "padam_step",
    "partial_power",
    "schedules",
    "update",
    "validate_hyperparameters",
]
