"""The non-finite guard (``skip_nonfinite=True``): is every gradient of a step finite?

A step whose gradients hold a NaN or an inf is skipped whole: parameters and all state, the
step count included, stay bitwise as they were, and the optimizer counts the skip. The check is
one read of the gradients; under ``jit`` it stays an array (no host sync) and the adapters
select the old or the new values with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from array_api_compat import array_namespace

__all__ = ["all_finite"]


def all_finite(arrays: Iterable[Any], *, xp: Any = None) -> Any:
    """A 0-d boolean array: whether every element of every array is finite (True if none)."""
    arrays = list(arrays)
    if xp is None:
        if not arrays:
            raise ValueError("all_finite() of no arrays needs xp")
        xp = array_namespace(*arrays)
    result = xp.asarray(True)
    for array in arrays:
        result = xp.logical_and(result, xp.all(xp.isfinite(array)))
    return result
