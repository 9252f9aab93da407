"""Padam reduces to torch's own optimizers (and the authors' code) where the maths says so.

Each pair trains two copies of the digits MLP in float64 on the same minibatches for 100 steps,
each optimizer on its own model's gradients, and compares the parameters.
"""

from __future__ import annotations

import math

import pytest
import torch

from padam_torch import Padam
from tests.torch.helpers import batches, digits_tensors, small_mlp

STEPS = 100


def _train_pair(make_reference, make_padam, steps: int = STEPS) -> tuple[list, list]:
    features, labels, _, _ = digits_tensors()
    models = [small_mlp(), small_mlp()]
    optimizers = [make_reference(models[0].parameters()), make_padam(models[1].parameters())]
    for _, (x, y) in zip(range(steps), batches(features, labels, 32), strict=False):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return list(models[0].parameters()), list(models[1].parameters())


def _assert_same_parameters(reference: list, padam: list, tolerance: float = 1e-10) -> None:
    for expected, actual in zip(reference, padam, strict=True):
        error = (actual - expected).abs().max() / expected.abs().max()
        assert error <= tolerance, f"relative error {error.item():.3g}"


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("amsgrad", [True, False], ids=["amsgrad", "no-amsgrad"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2], ids=["no-decay", "l2"])
def test_half_partial_torch_style_is_adam(amsgrad, weight_decay, foreach):
    common = {"lr": 1e-2, "eps": 1e-8, "weight_decay": weight_decay, "amsgrad": amsgrad}
    reference, padam = _train_pair(
        lambda params: torch.optim.Adam(params, foreach=foreach, **common),
        lambda params: Padam(params, partial=0.5, variant="torch", foreach=foreach, **common),
    )
    _assert_same_parameters(reference, padam)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("amsgrad", [True, False], ids=["amsgrad", "no-amsgrad"])
def test_half_partial_torch_style_decoupled_is_adamw(amsgrad, foreach):
    common = {"lr": 1e-2, "weight_decay": 5e-2, "amsgrad": amsgrad, "foreach": foreach}
    reference, padam = _train_pair(
        lambda params: torch.optim.AdamW(params, **common),
        lambda params: Padam(
            params, partial=0.5, variant="torch", decoupled_weight_decay=True, **common
        ),
    )
    _assert_same_parameters(reference, padam)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_half_partial_torch_style_maximize_is_adam_maximize(foreach):
    """Both ascend the loss (with L2 decay still pulling towards zero) in the same way."""
    common = {"lr": 1e-2, "weight_decay": 1e-2, "amsgrad": True, "maximize": True}
    reference, padam = _train_pair(
        lambda params: torch.optim.Adam(params, foreach=foreach, **common),
        lambda params: Padam(params, partial=0.5, variant="torch", foreach=foreach, **common),
    )
    _assert_same_parameters(reference, padam)


class AuthorsPadam(torch.optim.Optimizer):
    """The authors' published Padam step (Chen et al.'s ``Padam.py``), restated for this test.

    Coupled L2 decay, amsgrad by default, denominator ``(sqrt(v_hat) + eps) ** (2 * partial)``
    and step size ``lr * sqrt(1 - b2^t) / (1 - b1^t)``.
    """

    def __init__(self, params, lr, betas, eps, weight_decay, amsgrad, partial):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, partial=partial
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                grad = p.grad + group["weight_decay"] * p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    state["v_max"] = torch.zeros_like(p)
                state["step"] += 1
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["amsgrad"]:
                    torch.max(state["v_max"], state["v"], out=state["v_max"])
                    denom = state["v_max"].sqrt().add_(group["eps"])
                else:
                    denom = state["v"].sqrt().add_(group["eps"])
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1
                p.addcdiv_(state["m"], denom ** (group["partial"] * 2), value=-step_size)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("amsgrad", [True, False], ids=["amsgrad", "no-amsgrad"])
@pytest.mark.parametrize("partial", [0.125, 0.25, 0.3])
def test_reference_variant_is_the_authors_code(partial, amsgrad, foreach):
    common = {
        "lr": 1e-2,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 5e-4,
        "amsgrad": amsgrad,
        "partial": partial,
    }
    reference, padam = _train_pair(
        lambda params: AuthorsPadam(params, **common),
        lambda params: Padam(params, foreach=foreach, variant="reference", **common),
    )
    _assert_same_parameters(reference, padam)


def test_first_step_closed_form():
    """docs/numerics.md: theta1 = theta0 - lr (1-b2)^(1/2-p) g / (|g| + eps/sqrt(1-b2))^(2p)."""
    lr, b2, eps, partial = 0.1, 0.999, 1e-8, 0.125
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    grad = torch.tensor([1e-3, -2.0, 0.3, 1e-9], dtype=torch.float64)
    param = theta0.clone().requires_grad_()
    param.grad = grad
    Padam([param], lr=lr, betas=(0.9, b2), eps=eps, partial=partial, variant="reference").step()
    expected = theta0 - lr * (1 - b2) ** (0.5 - partial) * grad / (
        grad.abs() + eps / math.sqrt(1 - b2)
    ) ** (2 * partial)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-13, atol=0)
