"""docs/numerics.md's identities: p = 1/2 is each framework's AMSGrad/Adam, p = 0 is momentum SGD.

The frameworks' update rules are written here in float64 NumPy, line by line as their sources do
them (torch/optim/adam.py, optax's scale_by_adam/scale_by_amsgrad, keras/optimizers/adam.py);
the framework optimizers themselves are compared in the adapter tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import padam_core
from tests.oracle import gradient_sequence, relative_error

LR, B1, B2, EPS, WD = 0.01, 0.9, 0.999, 1e-8, 0.05
STEPS = 100


def torch_adam(theta, grads, *, amsgrad, adamw=False):
    """torch.optim.Adam / AdamW, single-tensor path."""
    theta = theta.copy()
    m, v, v_max = (np.zeros_like(theta) for _ in range(3))
    for t, g in enumerate(grads, start=1):
        if adamw:
            theta *= 1 - LR * WD
        m += (g - m) * (1 - B1)  # lerp
        v = v * B2 + (1 - B2) * g * g
        bc1, bc2_sqrt = 1 - B1**t, math.sqrt(1 - B2**t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            denominator = np.sqrt(v_max) / bc2_sqrt + EPS
        else:
            denominator = np.sqrt(v) / bc2_sqrt + EPS
        theta -= LR / bc1 * m / denominator
    return theta


def optax_adam(theta, grads, *, amsgrad, adamw=False):
    """optax.adam / optax.amsgrad / optax.adamw (eps_root = 0)."""
    theta = theta.copy()
    mu, nu, nu_max = (np.zeros_like(theta) for _ in range(3))
    for t, g in enumerate(grads, start=1):
        mu = B1 * mu + (1 - B1) * g
        nu = B2 * nu + (1 - B2) * g**2
        mu_hat, nu_hat = mu / (1 - B1**t), nu / (1 - B2**t)
        if amsgrad:
            nu_max = np.maximum(nu_max, nu_hat)
            nu_hat = nu_max
        update = mu_hat / (np.sqrt(nu_hat) + EPS)
        if adamw:
            update = update + WD * theta
        theta = theta - LR * update
    return theta


def keras_adam(theta, grads, *, amsgrad):
    """keras.optimizers.Adam(amsgrad=...)."""
    theta = theta.copy()
    m, v, v_hat = (np.zeros_like(theta) for _ in range(3))
    for t, g in enumerate(grads, start=1):
        alpha = LR * math.sqrt(1 - B2**t) / (1 - B1**t)
        m += (g - m) * (1 - B1)
        v += (g * g - v) * (1 - B2)
        denominator_v = v
        if amsgrad:
            v_hat = np.maximum(v_hat, v)
            denominator_v = v_hat
        theta -= m * alpha / (np.sqrt(denominator_v) + EPS)
    return theta


def padam(theta, grads, **hyperparameters):
    state = padam_core.init(theta, amsgrad=hyperparameters.get("amsgrad", True))
    for g in grads:
        theta, state = padam_core.update(g, state, theta, lr=LR, b1=B1, b2=B2, eps=EPS,
                                         **hyperparameters)  # fmt: skip
    return theta


@pytest.fixture(params=["spiky", "constant", "noisy"])
def problem(request):
    theta0 = np.random.default_rng(0).normal(size=(4, 5))
    return theta0, gradient_sequence((4, 5), STEPS, seed=1, kind=request.param)


@pytest.mark.parametrize("amsgrad", [True, False])
def test_half_torch_variant_is_torch_adam(problem, amsgrad):
    theta0, grads = problem
    ours = padam(theta0, grads, partial=0.5, variant="torch", amsgrad=amsgrad)
    assert relative_error(ours, torch_adam(theta0, grads, amsgrad=amsgrad)) <= 1e-12


@pytest.mark.parametrize("amsgrad", [True, False])
def test_half_torch_variant_decoupled_is_torch_adamw(problem, amsgrad):
    theta0, grads = problem
    ours = padam(theta0, grads, partial=0.5, variant="torch", amsgrad=amsgrad,
                 weight_decay=WD, decoupled_weight_decay=True)  # fmt: skip
    assert relative_error(ours, torch_adam(theta0, grads, amsgrad=amsgrad, adamw=True)) <= 1e-12


@pytest.mark.parametrize("amsgrad", [True, False])
def test_half_optax_variant_is_optax_amsgrad_and_adam(problem, amsgrad):
    theta0, grads = problem
    ours = padam(theta0, grads, partial=0.5, variant="optax", amsgrad=amsgrad)
    assert relative_error(ours, optax_adam(theta0, grads, amsgrad=amsgrad)) <= 1e-12


def test_half_optax_variant_decoupled_is_optax_adamw(problem):
    theta0, grads = problem
    ours = padam(theta0, grads, partial=0.5, variant="optax", amsgrad=False,
                 weight_decay=WD, decoupled_weight_decay=True)  # fmt: skip
    assert relative_error(ours, optax_adam(theta0, grads, amsgrad=False, adamw=True)) <= 1e-12


def test_half_reference_variant_is_keras_amsgrad(problem):
    theta0, grads = problem
    ours = padam(theta0, grads, partial=0.5, variant="reference", amsgrad=True)
    assert relative_error(ours, keras_adam(theta0, grads, amsgrad=True)) <= 1e-12


def test_zero_partial_reference_is_bias_scaled_momentum_sgd(problem):
    theta0, grads = problem
    theta, m = theta0.copy(), np.zeros_like(theta0)
    for t, g in enumerate(grads, start=1):
        m = B1 * m + (1 - B1) * g
        theta = theta - LR * math.sqrt(1 - B2**t) / (1 - B1**t) * m
    assert relative_error(padam(theta0, grads, partial=0.0, variant="reference"), theta) <= 1e-12


def test_spiky_gradients_separate_torch_and_optax_variants_constant_ones_do_not():
    theta0 = np.random.default_rng(0).normal(size=8)
    spiky = gradient_sequence((8,), STEPS, seed=1, kind="spiky")
    constant = gradient_sequence((8,), STEPS, seed=1, kind="constant")
    for grads, separated in ((spiky, True), (constant, False)):
        torch_style = padam(theta0, grads, variant="torch")
        optax_style = padam(theta0, grads, variant="optax")
        error = relative_error(torch_style, optax_style)
        assert (error > 1e-3) if separated else (error <= 1e-12), error
