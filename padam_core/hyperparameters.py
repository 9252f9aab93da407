"""Padam's hyperparameters: the defaults of docs/numerics.md and their validation, in one place.

Every adapter calls :func:`validate_hyperparameters` with its own argument names, so a user sees
the name they typed (``beta_1`` in Keras, ``betas[0]`` in torch) in the error message.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_B1",
    "DEFAULT_B2",
    "DEFAULT_EPS",
    "DEFAULT_LR",
    "DEFAULT_PARTIAL",
    "DEFAULT_VARIANT",
    "DEFAULT_WEIGHT_DECAY",
    "VARIANTS",
    "validate_hyperparameters",
]

# The paper's settings (its CIFAR scripts use p = 1/8 and lr = 0.1; the authors' constructor
# defaults to p = 1/4, we follow the paper).
DEFAULT_LR: Final = 0.1
DEFAULT_B1: Final = 0.9
DEFAULT_B2: Final = 0.999
DEFAULT_EPS: Final = 1e-8
DEFAULT_PARTIAL: Final = 0.125
DEFAULT_WEIGHT_DECAY: Final = 0.0
# "torch" (bias-corrected v inside the power): the full step from t = 1. The authors' placement
# ("reference") scales every step by (1 - b2^t)^(1/2 - p), a hidden warm-up of ~5000 steps that
# measurably hurts short runs and fine-tuning (README, "Which variant"; docs/numerics.md).
DEFAULT_VARIANT: Final = "torch"

#: The three denominators (see :mod:`padam_core.kernel` for their formulas).
VARIANTS: Final = ("reference", "torch", "optax")

# name -> (lower bound, upper bound, upper bound inclusive?, how the range reads)
_RANGES: Final[dict[str, tuple[float, float, bool, str]]] = {
    "lr": (0.0, math.inf, False, "0 <= {name} < inf"),
    "b1": (0.0, 1.0, False, "0 <= {name} < 1"),
    "b2": (0.0, 1.0, False, "0 <= {name} < 1"),
    "eps": (0.0, math.inf, False, "0 <= {name} < inf"),
    "partial": (0.0, 0.5, True, "0 <= {name} <= 0.5"),
    "weight_decay": (0.0, math.inf, False, "0 <= {name} < inf"),
}
_FLAGS: Final = ("amsgrad", "decoupled_weight_decay", "maximize")


def _is_concrete_number(value: Any) -> bool:
    """A Python or NumPy real number; arrays and traced values are not range-checked."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_hyperparameters(names: Mapping[str, str] | None = None, **values: Any) -> None:
    """Raise ``ValueError`` for the first invalid hyperparameter among ``values``.

    ``values`` uses the core names (``lr``, ``b1``, ``b2``, ``eps``, ``partial``,
    ``weight_decay``, ``variant``, ``amsgrad``, ``decoupled_weight_decay``, ``maximize``); only
    the ones given are checked. ``names`` maps a core name to the name the caller's user typed.
    Values that are arrays or traced (under ``jit``) are not range-checked: they cannot be read
    without breaking compilation. Nothing is mutated, so a caller validates before touching state.

    >>> validate_hyperparameters(partial=0.7)
    Traceback (most recent call last):
    ...
    ValueError: Invalid partial value: 0.7 (expected 0 <= partial <= 0.5)
    """
    names = names or {}
    for key, value in values.items():
        shown = names.get(key, key)
        if key in _RANGES:
            if isinstance(value, bool):
                raise ValueError(f"Invalid {shown} value: {value!r} (expected a real number)")
            if not _is_concrete_number(value):
                continue
            low, high, high_inclusive, text = _RANGES[key]
            number = float(value)
            in_range = low <= number and (number <= high if high_inclusive else number < high)
            if not in_range:
                raise ValueError(
                    f"Invalid {shown} value: {value!r} (expected {text.format(name=shown)})"
                )
        elif key == "variant":
            if value not in VARIANTS:
                expected = ", ".join(repr(v) for v in VARIANTS)
                raise ValueError(f"Invalid {shown} value: {value!r} (expected one of {expected})")
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"Invalid {shown} value: {value!r} (expected True or False)")
        else:
            raise TypeError(f"validate_hyperparameters() got an unknown hyperparameter {key!r}")
