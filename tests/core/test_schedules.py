"""padam_core.schedules: values, array counts, validation, configs."""

from __future__ import annotations

import json
import math

import array_api_strict
import numpy as np
import pytest

from padam_core import schedules
from padam_core.guard import all_finite

BUILT_IN = [
    schedules.constant(0.3),
    schedules.linear(0.5, 0.125, steps=100),
    schedules.cosine(0.5, 0.0, steps=40),
    schedules.piecewise([10, 50], [0.5, 0.25, 0.125]),
]
STEPS = [1, 2, 9, 10, 11, 40, 41, 50, 51, 100, 101, 102, 10_000]


def test_documented_values() -> None:
    p = schedules.linear(0.5, 0.125, steps=1000)
    assert [p(t) for t in (1, 501, 1001, 5000)] == [0.5, 0.3125, 0.125, 0.125]
    c = schedules.cosine(0.5, 0.125, steps=100)
    assert c(1) == 0.5 and c(101) == 0.125 and c(51) == pytest.approx(0.3125)
    w = schedules.piecewise([10, 20], [0.5, 0.25, 0.125])
    assert [w(t) for t in (1, 10, 11, 20, 21)] == [0.5, 0.5, 0.25, 0.25, 0.125]


@pytest.mark.parametrize("schedule", BUILT_IN, ids=repr)
def test_python_values_in_range_and_floats(schedule: schedules.Schedule) -> None:
    for t in STEPS:
        value = schedule(t)
        assert type(value) is float and 0.0 <= value <= 0.5


@pytest.mark.parametrize("xp", [np, array_api_strict], ids=["numpy", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "float32", "float64"])
@pytest.mark.parametrize("schedule", BUILT_IN, ids=repr)
def test_array_count_matches_python(schedule: schedules.Schedule, xp, dtype: str) -> None:
    for t in STEPS:
        value = schedule(xp.asarray(t, dtype=getattr(xp, dtype)))
        assert value.shape == ()
        expected = schedule(t)
        tolerance = 1e-6 if dtype in ("int32", "int64", "float32") else 1e-12
        assert abs(float(value) - expected) <= tolerance, (t, float(value), expected)
        if expected in (0.5, 0.25, 0.125):  # plateaus are exact (the square-root chains apply)
            assert float(value) == expected


def test_torch_and_jax_counts() -> None:
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    schedule = schedules.cosine(0.5, 0.125, steps=100)
    assert float(schedule(torch.tensor(51.0))) == pytest.approx(schedule(51), abs=1e-6)
    traced = jax.jit(lambda t: schedule(t))(jax.numpy.int32(51))
    assert float(traced) == pytest.approx(schedule(51), abs=1e-6)


@pytest.mark.parametrize("schedule", BUILT_IN, ids=repr)
def test_config_round_trips_through_json(schedule: schedules.Schedule) -> None:
    config = json.loads(json.dumps(schedule.get_config()))
    rebuilt = schedules.from_config(config)
    assert rebuilt == schedule and repr(rebuilt) == repr(schedule)
    assert [rebuilt(t) for t in STEPS] == [schedule(t) for t in STEPS]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: schedules.constant(0.6), "constant value"),
        (lambda: schedules.constant("0.1"), "constant value"),
        (lambda: schedules.linear(-0.1, 0.1, 5), "linear start"),
        (lambda: schedules.linear(0.1, math.nan, 5), "linear end"),
        (lambda: schedules.linear(0.1, 0.2, 0), "linear steps"),
        (lambda: schedules.cosine(0.1, 0.2, 2.5), "cosine steps"),
        (lambda: schedules.cosine(0.1, 0.2, True), "cosine steps"),
        (lambda: schedules.piecewise([5, 5], [0.1, 0.2, 0.3]), "strictly increasing"),
        (lambda: schedules.piecewise([0], [0.1, 0.2]), "piecewise boundary"),
        (lambda: schedules.piecewise([5], [0.1]), "one more value"),
        (lambda: schedules.piecewise([5], [0.1, 0.7]), "piecewise value"),
        (lambda: schedules.piecewise("5", [0.1, 0.2]), "boundaries"),
        (lambda: schedules.from_config({"schedule": "exp"}), "schedule config"),
        (lambda: schedules.from_config({"schedule": "linear", "start": 0.1}), "schedule config"),
        (lambda: schedules.from_config([1, 2]), "schedule config"),
    ],
)
def test_bad_arguments_raise_clearly(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_evaluate_partial() -> None:
    assert schedules.evaluate_partial(0.25, 7) == 0.25
    assert schedules.evaluate_partial(schedules.linear(0.5, 0.0, 10), 6) == 0.25
    assert schedules.evaluate_partial(lambda t: 0.5 / t, 2) == 0.25
    with pytest.raises(ValueError, match="at step 3"):
        schedules.evaluate_partial(lambda t: 0.9, 3)
    with pytest.raises(ValueError, match="partial"):
        schedules.evaluate_partial(lambda t: "x", 3)
    schedules.validate_partial(schedules.constant(0.1))
    schedules.validate_partial(lambda t: 0.1)
    with pytest.raises(ValueError, match="partial"):
        schedules.validate_partial("0.1")


def test_all_finite() -> None:
    assert bool(all_finite([np.ones(3), np.zeros((2, 0))]))
    assert not bool(all_finite([np.ones(3), np.array([1.0, np.inf])]))
    assert not bool(all_finite([np.array(np.nan + 0j)]))
    assert bool(all_finite([], xp=np))
