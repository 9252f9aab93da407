"""Hypothesis strategies shared by the robustness suite: invalid, boundary and extreme values."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

#: Modest and reproducible: CI runs the same examples every time.
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)

BOUNDARY = [0.0, -0.0, 0.5, 1.0, 1 - 1e-16, 0.999, 1e-300, 5e-324, 1e300, -1e-8, 3e38, 1e30]
real_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(BOUNDARY),
    st.integers(-2, 2),
)
#: Anything a user might pass as a hyperparameter.
hyperparameter_values = st.one_of(
    real_numbers,
    real_numbers.map(np.float64),
    real_numbers.map(np.array),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.complex_numbers(allow_nan=False, max_magnitude=10),
    st.lists(real_numbers, min_size=1, max_size=2),
    st.just(np.array([0.1, 0.2])),
)
#: padam_core's names and the range each must satisfy (what a valid value looks like).
VALID = {
    "lr": lambda x: 0 <= x < math.inf,
    "b1": lambda x: 0 <= x < 1,
    "b2": lambda x: 0 <= x < 1,
    "eps": lambda x: 0 < x < math.inf,
    "partial": lambda x: 0 <= x <= 0.5,
    "weight_decay": lambda x: 0 <= x < math.inf,
}
NAMES = sorted(VALID)


def as_valid_float(value: object, name: str) -> float | None:
    """The float a valid value stands for, or None when the value must be rejected."""
    if isinstance(value, (bool, np.bool_, str, complex, list)) or value is None:
        return None
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "iuf":
        return None
    number = float(array)
    return number if VALID[name](number) else None


#: Gradients: extreme finite values, non-finite values, zeros.
gradient_scales = st.sampled_from([0.0, 1e-30, 1.0, 1e19, 1e30, -3e38, math.nan, math.inf])
