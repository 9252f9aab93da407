"""The numba fused in-place path against the pure kernel it must match."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import padam_core
from padam_core import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")

COMBINATIONS = list(
    itertools.product(
        padam_core.VARIANTS,
        (True, False),  # amsgrad
        ((0.0, False), (0.01, False), (0.01, True)),  # weight decay, decoupled
        (False, True),  # maximize
    )
)


def _compare(dtype, partial, combinations) -> None:
    rng = np.random.default_rng(0)
    for variant, amsgrad, (weight_decay, decoupled), maximize in combinations:
        hyperparameters = dict(
            lr=0.1, b1=0.9, b2=0.999, eps=1e-8, partial=partial, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled, amsgrad=amsgrad, maximize=maximize, variant=variant,
        )  # fmt: skip
        param = rng.normal(size=(8, 9)).astype(dtype)
        state = padam_core.init(param, amsgrad=amsgrad)
        pure = [param.copy(), state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq]
        fused = [a.copy() if a is not None else None for a in pure]
        for t in range(1, 31):
            grad = (rng.normal(size=(8, 9)) * (10.0 if t == 1 else 1.0)).astype(dtype)
            pure = list(padam_core.padam_step(pure[0], grad, *pure[1:], t, **hyperparameters))
            fused_cpu.padam_step_inplace(fused[0], grad, *fused[1:], t, **hyperparameters)
        for ours, reference in zip(fused, pure, strict=True):
            if reference is None:
                continue
            if fused_cpu.power_mode(partial) == fused_cpu.POW_GENERAL:
                # numba's pow and NumPy's pow may differ in the last bit.
                tolerance = 1e-6 if dtype == np.float32 else 1e-14
                scale = np.max(np.abs(reference))
                assert np.max(np.abs(ours - reference)) <= tolerance * scale
            else:  # the same operations in the same order: the same bits
                np.testing.assert_array_equal(ours, reference)


# One loop is compiled per (variant, power, amsgrad, dtype): the tables below keep that to ~20.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_variant_and_flag_matches_pure_kernel(dtype):
    _compare(dtype, 0.125, COMBINATIONS)


@pytest.mark.parametrize("partial", [0.0, 0.0625, 0.25, 0.5, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_power_matches_pure_kernel(dtype, partial):
    _compare(dtype, partial, [("reference", True, (0.01, False), False)])


def test_supports_only_contiguous_writable_numpy_floats_alike():
    a = np.ones(4, np.float32)
    assert fused_cpu.supports(a, a.copy())
    assert not fused_cpu.supports(a, np.ones(4, np.float64))
    assert not fused_cpu.supports(np.ones(4, np.float16))
    assert not fused_cpu.supports(np.ones((4, 4), np.float32)[:, 0])
    assert not fused_cpu.supports(a, np.ones(5, np.float32))
    read_only = np.ones(4, np.float32)
    read_only.flags.writeable = False
    assert not fused_cpu.supports(read_only)
    with pytest.raises(TypeError, match="contiguous NumPy"):
        fused_cpu.padam_step_inplace(a, a, a, a, np.ones(4), 1, lr=0.1, b1=0.9, b2=0.99,
                                     eps=1e-8, partial=0.125)  # fmt: skip


@pytest.mark.parametrize("partial", [0.125, 0.3])
def test_optimizer_gives_the_same_numbers_fused_or_not(partial, monkeypatch):
    fused_calls = []
    inplace = fused_cpu.padam_step_inplace
    monkeypatch.setattr(
        fused_cpu,
        "padam_step_inplace",
        lambda *args, **kwargs: fused_calls.append(1) or inplace(*args, **kwargs),
    )
    rng = np.random.default_rng(1)
    start = {"w": rng.normal(size=(5, 6)).astype(np.float32), "b": rng.normal(size=6)}
    runs = []
    for fused in (None, False):
        params = {k: v.copy() for k, v in start.items()}
        optimizer = padam_core.Padam(params, partial=partial, weight_decay=0.01, fused=fused)
        for step in range(20):
            grads = {k: np.cos(step + v * 3).astype(v.dtype) for k, v in start.items()}
            optimizer.step(grads)
        runs.append(params)
        # fused=None takes the fused path for both arrays at every step; False never does.
        assert len(fused_calls) == 40
    for key in start:
        if partial == 0.125:
            np.testing.assert_array_equal(runs[0][key], runs[1][key])
        else:  # pow: numba's and NumPy's may differ in the last bit
            np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-5)
