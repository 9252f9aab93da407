"""The kernel against the float64 oracle, on every namespace, at docs/numerics.md's tolerances."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest

import padam_core
from tests.core.helpers import TOLERANCE, dtype_of, rounded, run_kernel
from tests.oracle import Config, gradient_sequence, oracle_trajectory, relative_error

STEPS = 100
WEIGHT_DECAY_MODES = {
    "none": {},
    "coupled": {"weight_decay": 0.01},
    "decoupled": {"weight_decay": 0.01, "decoupled_weight_decay": True},
}
CASES = [
    Config(variant=variant, amsgrad=amsgrad, maximize=maximize, **WEIGHT_DECAY_MODES[mode])
    for variant, amsgrad, mode, maximize in itertools.product(
        padam_core.VARIANTS, (True, False), WEIGHT_DECAY_MODES, (False, True)
    )
]


def case_id(config: Config) -> str:
    wd = (
        "none"
        if not config.weight_decay
        else ("decoupled" if config.decoupled_weight_decay else "coupled")
    )
    return (
        f"{config.variant}-ams{int(config.amsgrad)}-wd_{wd}-max{int(config.maximize)}"
        f"-p{config.partial}"
    )


@cache
def _oracle(config: Config, shape: tuple[int, ...], kind: str, dtype_name: str, xp):
    """(theta0, grads, oracle trajectory) with inputs rounded to the tested dtype."""
    dtype = getattr(xp, dtype_name)
    rng = np.random.default_rng(0)
    theta0 = rounded(xp, rng.normal(size=shape), dtype)
    grads = [rounded(xp, g, dtype) for g in gradient_sequence(shape, STEPS, seed=1, kind=kind)]
    return theta0, grads, oracle_trajectory(theta0, grads, config)


def _check(xp, config: Config, shape, dtype_name: str, kind: str = "spiky") -> None:
    dtype = dtype_of(xp, dtype_name)
    theta0, grads, expected = _oracle(config, shape, kind, dtype_name, xp)
    actual = run_kernel(xp, theta0, grads, config, dtype)
    errors = [relative_error(a, e) for a, e in zip(actual, expected, strict=True)]
    assert max(errors) <= TOLERANCE[dtype_name], (
        f"worst step {int(np.argmax(errors)) + 1}: relative error {max(errors):.3g}"
    )


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("config", CASES, ids=case_id)
def test_every_variant_and_flag_matches_oracle(xp, config, dtype_name):
    _check(xp, config, (2, 3, 4), dtype_name)


@pytest.mark.parametrize("kind", ["constant", "noisy"])
@pytest.mark.parametrize("partial", [0.0, 0.0625, 0.125, 0.25, 0.3, 0.5])
@pytest.mark.parametrize("variant", padam_core.VARIANTS)
def test_every_partial_power_matches_oracle(xp, variant, partial, kind):
    # 1/16, 1/8, 1/4, 1/2 take the square-root chain; 0.3 takes pow; 0 is exactly 1.
    _check(xp, Config(variant=variant, partial=partial), (7,), "float64", kind)


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3, 4)], ids=str)
def test_every_shape_matches_oracle(xp, shape, dtype_name):
    _check(xp, Config(weight_decay=0.01), shape, dtype_name, "noisy")


def test_complex_parameters_use_squared_modulus():
    rng = np.random.default_rng(3)
    theta0 = rng.normal(size=6) + 1j * rng.normal(size=6)
    grads = [rng.normal(size=6) + 1j * rng.normal(size=6) for _ in range(STEPS)]
    config = Config(weight_decay=0.01)
    actual = run_kernel(padam_core.kernel.array_namespace(theta0), theta0, grads, config, None)
    expected = oracle_trajectory(theta0, grads, config)
    assert max(relative_error(a, e) for a, e in zip(actual, expected, strict=True)) <= 1e-12
