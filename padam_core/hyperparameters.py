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
    "check_number",
    "is_traced",
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
    # eps = 0 would turn every zero gradient entry into 0/0 (docs/numerics.md: eps > 0).
    "eps": (0.0, math.inf, False, "0 < {name} < inf"),
    "partial": (0.0, 0.5, True, "0 <= {name} <= 0.5"),
    "weight_decay": (0.0, math.inf, False, "0 <= {name} < inf"),
}
_FLAGS: Final = ("amsgrad", "decoupled_weight_decay", "maximize")


_STRICT_LOW: Final = frozenset({"eps"})  # the lower bound itself is excluded


def is_traced(value: Any) -> bool:
    """Whether ``value`` is an array whose number cannot be read now (traced under ``jit``).

    Duck typing, no framework import: a 1-element array whose ``float()`` fails (a JAX tracer
    raises a concretization error) is traced. Torch tensors under ``torch.compile`` read fine
    while dynamo traces, so the torch adapter passes ``traced=torch.compiler.is_compiling()``.
    """
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        return False
    try:
        _read(value)
    except Exception:  # ConcretizationTypeError, TracerArrayConversionError, ...
        return True
    return False


def _read(value: Any) -> float:
    """The number held by a 1-element array (indexed first: ``float`` of a 1-d NumPy array is
    deprecated)."""
    return float(value[(0,) * len(tuple(value.shape))] if len(tuple(value.shape)) else value)


def _array_kind(value: Any) -> str | None:
    """``"real"`` for a real 1-element array, a reason string for another array, None otherwise."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        return None
    dtype = str(value.dtype).lower()
    if "bool" in dtype or "complex" in dtype or not ("float" in dtype or "int" in dtype):
        return f"an array of dtype {value.dtype}"
    size = 1
    for extent in tuple(value.shape):
        size *= int(extent) if extent is not None else 2
    if size != 1:
        return f"an array of shape {tuple(value.shape)}"
    return "real"


def check_number(value: Any, shown: str, *, traced: bool | None = None) -> float | None:
    """The float of a real hyperparameter, or ``None`` when it is traced (not range-checked).

    Rejects (``ValueError`` naming ``shown``) bool, str, None, complex, containers, arrays that
    are not real or hold more than one number; accepts Python and NumPy real numbers and real
    1-element arrays, read with ``float()`` unless ``traced`` (or :func:`is_traced`).
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    kind = _array_kind(value)
    if kind is None or type(value).__name__ == "bool_":
        raise ValueError(f"Invalid {shown} value: {value!r} (expected a real number)")
    if kind != "real":
        raise ValueError(f"Invalid {shown} value: {kind} (expected a real number)")
    if traced is None:
        traced = is_traced(value)
    return None if traced else _read(value)


def validate_hyperparameters(
    names: Mapping[str, str] | None = None, *, traced: bool | None = None, **values: Any
) -> None:
    """Raise ``ValueError`` for the first invalid hyperparameter among ``values``.

    ``values`` uses the core names (``lr``, ``b1``, ``b2``, ``eps``, ``partial``,
    ``weight_decay``, ``variant``, ``amsgrad``, ``decoupled_weight_decay``, ``maximize``); only
    the ones given are checked. ``names`` maps a core name to the name the caller's user typed.

    The rule, the same in every adapter: a value that is not a real number (bool, str, None,
    complex, a list, an array of another dtype or of more than one element) is rejected; a
    concrete value (Python or NumPy number, a 0-d or 1-element array whose number can be read)
    is range-checked; only a traced value (under ``jit``; ``traced=True`` from an adapter that
    knows, e.g. under ``torch.compile``) skips the range check: reading it would break the
    compilation. Nothing is mutated, so a caller validates before touching state.

    >>> validate_hyperparameters(partial=0.7)
    Traceback (most recent call last):
    ...
    ValueError: Invalid partial value: 0.7 (expected 0 <= partial <= 0.5)
    """
    names = names or {}
    for key, value in values.items():
        shown = names.get(key, key)
        if key in _RANGES:
            number = check_number(value, shown, traced=traced)
            if number is None:
                continue
            low, high, high_inclusive, text = _RANGES[key]
            above = low < number if key in _STRICT_LOW else low <= number
            in_range = above and (number <= high if high_inclusive else number < high)
            if not in_range:
                raise ValueError(
                    f"Invalid {shown} value: {value!r} (expected {text.format(name=shown)})"
                )
        elif key == "variant":
            if not isinstance(value, str) or value not in VARIANTS:
                expected = ", ".join(repr(v) for v in VARIANTS)
                raise ValueError(f"Invalid {shown} value: {value!r} (expected one of {expected})")
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"Invalid {shown} value: {value!r} (expected True or False)")
        else:
            raise TypeError(f"validate_hyperparameters() got an unknown hyperparameter {key!r}")
