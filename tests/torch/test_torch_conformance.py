"""padam_torch against the padam_core float64 reference, on a real model's gradient sequence."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import padam_core
from tests.torch.helpers import (
    TOLERANCE,
    cast_sequence,
    core_hyperparameters,
    oracle_trajectory,
    recorded_gradients,
    relative_error,
    torch_trajectory,
)

VARIANTS = padam_core.VARIANTS
# Every flag combination (maximize x {no decay, L2, decoupled}; amsgrad and the variant are
# crossed below), each with another partial: every square-root chain, the general pow (0.3)
# and p = 0 are covered, and one case changes the betas.
DECOUPLED = {"weight_decay": 1e-2, "decoupled_weight_decay": True}
CASES = (
    {},
    {"partial": 0.5, "maximize": True},
    {"partial": 0.25, "weight_decay": 1e-2},
    {"partial": 1 / 16, "weight_decay": 1e-2, "maximize": True},
    {"partial": 0.3, **DECOUPLED},
    {"partial": 0.0, **DECOUPLED, "maximize": True, "betas": (0.8, 0.99)},
)
CASE_IDS = (
    "p1/8",
    "p1/2-maximize",
    "p1/4-l2",
    "p1/16-l2-maximize",
    "p0.3-decoupled",
    "p0-decoupled-maximize-betas",
)
FLOAT_DTYPES = (torch.float64, torch.float32)
LOW_PRECISION = (torch.bfloat16, torch.float16)


@functools.cache
def _oracle(variant: str, amsgrad: bool, case_index: int, dtype: torch.dtype) -> tuple:
    initial, gradients = cast_sequence(*recorded_gradients(), dtype)
    kwargs = {"lr": 0.01, "variant": variant, "amsgrad": amsgrad, **CASES[case_index]}
    return tuple(oracle_trajectory(initial, gradients, **core_hyperparameters(kwargs)))


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case_index", range(len(CASES)), ids=CASE_IDS)
@pytest.mark.parametrize("amsgrad", [True, False], ids=["amsgrad", "no-amsgrad"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_trajectory_matches_float64_kernel(variant, amsgrad, case_index, dtype, foreach):
    initial, gradients = recorded_gradients()
    kwargs = {"lr": 0.01, "variant": variant, "amsgrad": amsgrad, **CASES[case_index]}
    params, _ = torch_trajectory(initial, gradients, dtype, foreach=foreach, **kwargs)
    reference = _oracle(variant, amsgrad, case_index, dtype)
    for param, expected in zip(params, reference, strict=True):
        assert relative_error(param, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
def test_capturable_and_tensor_lr_match_kernel(variant, dtype, foreach):
    """Device-side steps (bias corrections as tensors) and a tensor lr give the same numbers."""
    initial, gradients = recorded_gradients()
    kwargs = {"variant": variant, "weight_decay": 1e-3, "decoupled_weight_decay": True}
    params, optimizer = torch_trajectory(
        # float64 lr tensor: a float32 0.01 alone would be a 2e-9 relative change.
        initial,
        gradients,
        dtype,
        lr=torch.tensor(0.01, dtype=torch.float64),
        capturable=True,
        foreach=foreach,
        **kwargs,
    )
    assert optimizer.state[params[0]]["step"].device == params[0].device
    reference = _oracle_for(variant, dtype, kwargs)
    for param, expected in zip(params, reference, strict=True):
        assert relative_error(param, expected) <= TOLERANCE[dtype]


def _oracle_for(variant, dtype, kwargs):
    initial, gradients = cast_sequence(*recorded_gradients(), dtype)
    core = core_hyperparameters({"lr": 0.01, "variant": variant, **kwargs})
    return oracle_trajectory(initial, gradients, **core)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_foreach_equals_single_tensor_on_mixed_groups(foreach):
    """Mixed dtypes in one group (float64, float32, bfloat16): each dtype follows its own path."""
    torch.manual_seed(0)
    shapes_dtypes = [((3, 4), torch.float64), ((5,), torch.float32), ((2, 3), torch.bfloat16)]
    params = [torch.randn(s, dtype=d, requires_grad=True) for s, d in shapes_dtypes]
    twins = [p.detach().clone().requires_grad_() for p in params]
    single = padam_torch_padam(params, foreach=False)
    other = padam_torch_padam(twins, foreach=foreach)
    for _ in range(20):
        for p, q in zip(params, twins, strict=True):
            g = torch.randn(p.shape, dtype=p.dtype)
            p.grad, q.grad = g.clone(), g.clone()
        single.step()
        other.step()
    for p, q in zip(params, twins, strict=True):
        assert q.dtype == p.dtype
        tolerance = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 2e-2}[p.dtype]
        assert relative_error(q, p.detach().to(torch.float64).numpy()) <= tolerance


def padam_torch_padam(params, **kwargs):
    from padam_torch import Padam

    return Padam(params, lr=0.01, weight_decay=1e-2, **kwargs)


def test_variants_separate_on_large_then_small_gradients():
    """A large first gradient then small ones separates torch- from optax-style; a constant
    gradient does not (docs/numerics.md). Each run also matches the kernel."""
    gradients = [[np.array([10.0, -10.0])]] + [[np.array([0.01, -0.01])]] * 30
    constant = [[np.array([0.5, -0.5])]] * 31
    initial = [np.array([1.0, 2.0])]
    results = {}
    for name, sequence in (("spiky", gradients), ("constant", constant)):
        for which in ("torch", "optax"):
            params, _ = torch_trajectory(
                initial, sequence, torch.float64, lr=0.01, variant=which, partial=0.25
            )
            expected = oracle_trajectory(initial, sequence, lr=0.01, variant=which, partial=0.25)
            assert relative_error(params[0], expected[0]) <= 1e-12
            results[name, which] = params[0].detach().numpy()
    assert np.abs(results["spiky", "torch"] - results["spiky", "optax"]).max() > 1e-4
    np.testing.assert_allclose(
        results["constant", "torch"], results["constant", "optax"], rtol=1e-6
    )


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("amsgrad", [True, False], ids=["amsgrad", "no-amsgrad"])
def test_complex_parameter_is_its_real_view(foreach, amsgrad):
    """As torch: a complex parameter is updated as view_as_real, two real parameters."""
    torch.manual_seed(0)
    complex_param = torch.randn(4, 3, dtype=torch.complex128, requires_grad=True)
    real_param = torch.view_as_real(complex_param.detach()).clone().requires_grad_()
    kwargs = {"lr": 0.01, "amsgrad": amsgrad, "foreach": foreach, "weight_decay": 1e-2}
    optimizers = [padam_torch_only([p], **kwargs) for p in (complex_param, real_param)]
    for _ in range(30):
        grad = torch.randn(4, 3, dtype=torch.complex128)
        complex_param.grad = grad
        real_param.grad = torch.view_as_real(grad).clone()
        for optimizer in optimizers:
            optimizer.step()
    assert complex_param.is_complex()
    torch.testing.assert_close(torch.view_as_real(complex_param.detach()), real_param.detach())
    state = optimizers[0].state[complex_param]
    assert state["exp_avg"].is_complex()  # same layout as torch.optim.Adam's state


def padam_torch_only(params, **kwargs):
    from padam_torch import Padam

    return Padam(params, **kwargs)


# ------------------------------------------------------------------------ low precision


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_step_is_float32_step_rounded_once(dtype, variant, foreach):
    torch.manual_seed(0)
    param = torch.randn(64, dtype=torch.float32).to(dtype).requires_grad_()
    grad = (torch.randn(64) * 1e-3).to(dtype)
    param.grad = grad
    start = param.detach().to(torch.float32)
    padam_torch_only([param], lr=0.01, variant=variant, foreach=foreach).step()
    zeros = torch.zeros(64)
    expected = padam_core.padam_step(
        start, grad.to(torch.float32), zeros, zeros, zeros, 1, lr=0.01, variant=variant
    ).param.to(dtype)
    assert param.dtype == dtype
    # Within one ulp of the parameter's dtype (bitwise on the single-tensor path).
    ulp = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    difference = (param.detach().float() - expected.float()).abs()
    assert torch.all(difference <= ulp * expected.float().abs())
    if not foreach:
        assert torch.equal(param.detach(), expected)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_zero_gradients_never_nan(dtype, variant, foreach):
    """eps = 1e-8 underflows in float16; the float32 math keeps the update finite (zero)."""
    param = torch.ones(8, dtype=dtype, requires_grad=True)
    optimizer = padam_torch_only([param], variant=variant, foreach=foreach)
    for _ in range(100):
        param.grad = torch.zeros_like(param)
        optimizer.step()
        assert torch.isfinite(param).all()
    assert torch.equal(param.detach(), torch.ones(8, dtype=dtype))
    assert optimizer.state[param]["exp_avg"].dtype == torch.float32
    assert optimizer.state[param]["max_exp_avg_sq"].dtype == torch.float32


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_100_steps_close_to_float32(dtype, foreach):
    initial, gradients = recorded_gradients()
    low, _ = torch_trajectory(initial, gradients, dtype, lr=0.01, foreach=foreach)
    full, _ = torch_trajectory(initial, gradients, torch.float32, lr=0.01, foreach=foreach)
    for param, reference in zip(low, full, strict=True):
        assert param.dtype == dtype and torch.isfinite(param).all()
        # Rounding drift only: each step rounds theta to 8 (bf16) / 11 (fp16) bits, and updates
        # under half an ulp are lost. Measured (max over tensors), default variant "torch":
        # bf16 0.120, fp16 within 0.05; "reference" (smaller early steps): bf16 0.064, fp16 0.022.
        bound = {torch.bfloat16: 0.15, torch.float16: 0.05}[dtype]
        assert relative_error(param, reference.detach().double().numpy()) <= bound
