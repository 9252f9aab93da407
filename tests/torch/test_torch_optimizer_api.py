"""Padam behaves like a built-in torch.optim optimizer: arguments, groups, step, errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import padam_core
from padam_torch import Padam


def _param(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, requires_grad=True)


def test_defaults_follow_spec():
    defaults = Padam([_param(2)]).defaults
    assert defaults["lr"] == padam_core.DEFAULT_LR == 0.1
    assert defaults["betas"] == (padam_core.DEFAULT_B1, padam_core.DEFAULT_B2) == (0.9, 0.999)
    assert defaults["eps"] == 1e-8
    assert defaults["partial"] == 0.125
    assert defaults["weight_decay"] == 0
    assert defaults["amsgrad"] is True
    assert defaults["variant"] == padam_core.DEFAULT_VARIANT == "torch"
    assert defaults["decoupled_weight_decay"] is False and defaults["maximize"] is False


def test_positional_arguments_follow_torch_then_the_authors():
    """(lr, betas, eps, weight_decay, amsgrad) as torch.optim.Adam, then partial (authors')."""
    optimizer = Padam([_param(2)], 0.05, (0.8, 0.99), 1e-6, 1e-4, False, 0.25)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (0.05, (0.8, 0.99), 1e-6)
    assert (group["weight_decay"], group["amsgrad"], group["partial"]) == (1e-4, False, 0.25)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "Invalid lr value: -0.1"),
        ({"lr": torch.tensor(-0.1)}, "Invalid lr value"),
        ({"lr": torch.ones(2)}, "Tensor lr must be 1-element"),
        (
            {"betas": (1.0, 0.999)},
            r"Invalid betas\[0\] value: 1.0 \(expected 0 <= betas\[0\] < 1\)",
        ),
        ({"betas": (0.9, -0.5)}, r"Invalid betas\[1\] value: -0.5"),
        ({"betas": (0.9, 0.99, 0.9)}, "Invalid betas value"),
        ({"eps": -1e-8}, "Invalid eps value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"partial": 0.7}, r"Invalid partial value: 0.7 \(expected 0 <= partial <= 0.5\)"),
        ({"partial": -0.1}, "Invalid partial value"),
        ({"variant": "adam"}, "Invalid variant value: 'adam'"),
        ({"amsgrad": "yes"}, "Invalid amsgrad value: 'yes'"),
        ({"decoupled_weight_decay": 1}, "Invalid decoupled_weight_decay value"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Padam([_param(2)], **kwargs)


def test_invalid_param_group_is_rejected_and_groups_are_unchanged():
    first, second = _param(2), _param(3)
    optimizer = Padam([first], lr=0.01)
    before = copy.deepcopy(optimizer.param_groups)
    with pytest.raises(ValueError, match=r"Invalid partial value: 0\.9"):
        optimizer.add_param_group({"params": [second], "partial": 0.9})
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["params"][0] is first
    assert optimizer.param_groups[0]["lr"] == before[0]["lr"]


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_per_group_hyperparameters_equal_separate_optimizers(foreach):
    a, b = _param(4, seed=1), _param(3, seed=2)
    a2, b2 = (t.detach().clone().requires_grad_() for t in (a, b))
    grouped = Padam(
        [{"params": [a], "partial": 0.25, "lr": 0.02}, {"params": [b], "variant": "optax"}],
        lr=0.05,
        foreach=foreach,
    )
    separate = [
        Padam([a2], partial=0.25, lr=0.02, foreach=foreach),
        Padam([b2], variant="optax", lr=0.05, foreach=foreach),
    ]
    for step in range(10):
        torch.manual_seed(100 + step)
        for p, q in ((a, a2), (b, b2)):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        grouped.step()
        for optimizer in separate:
            optimizer.step()
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_step_with_closure_returns_the_loss_and_enables_grad():
    param = _param(3)
    optimizer = Padam([param])

    def closure():
        optimizer.zero_grad()
        assert torch.is_grad_enabled()
        loss = (param**2).sum()
        loss.backward()
        return loss

    before = param.detach().clone()
    loss = optimizer.step(closure)
    assert torch.equal(loss, (before**2).sum())
    assert not torch.equal(param.detach(), before)
    assert optimizer.step() is None


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_parameters_without_gradient_are_skipped(foreach):
    with_grad, without_grad = _param(3), _param(2, seed=1)
    before = without_grad.detach().clone()
    optimizer = Padam([with_grad, without_grad], foreach=foreach)
    with_grad.grad = torch.ones_like(with_grad)
    optimizer.step()
    optimizer.step()
    assert torch.equal(without_grad.detach(), before)
    assert without_grad not in optimizer.state
    state = optimizer.state[with_grad]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert state["step"].dtype == torch.float32 and state["step"].item() == 2.0
    assert state["step"].device.type == "cpu"


def test_no_running_max_without_amsgrad():
    param = _param(3)
    optimizer = Padam([param], amsgrad=False)
    param.grad = torch.ones_like(param)
    optimizer.step()
    assert set(optimizer.state[param]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_sparse_gradients_are_rejected_clearly(foreach):
    dense = torch.nn.Linear(3, 2)
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = Padam(
        [{"params": dense.parameters()}, {"params": embedding.parameters()}], foreach=foreach
    )
    before = [p.detach().clone() for p in (*dense.parameters(), embedding.weight)]
    dense(embedding(torch.tensor([1, 2]))).sum().backward()
    with pytest.raises(RuntimeError, match="Padam does not support sparse gradients"):
        optimizer.step()
    after = [p.detach() for p in (*dense.parameters(), embedding.weight)]
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert len(optimizer.state) == 0  # not even the dense group was stepped


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_step_leaves_gradients_untouched_and_maximize_ascends(foreach, weight_decay):
    up, down = _param(5), _param(5)
    grad = torch.randn(5, dtype=torch.float64)
    up.grad, down.grad = grad.clone(), (-grad).clone()
    Padam([up], maximize=True, foreach=foreach, weight_decay=weight_decay).step()
    # maximize on g is minimize on -g, except that L2 decay still pulls towards zero: compare
    # without decay, and check the gradient is never written in either case.
    Padam([down], foreach=foreach, weight_decay=weight_decay).step()
    assert torch.equal(up.grad, grad) and torch.equal(down.grad, -grad)
    if weight_decay == 0:
        assert torch.equal(up.detach(), down.detach())


def test_zero_grad_sets_gradients_to_none():
    param = _param(2)
    optimizer = Padam([param])
    param.grad = torch.ones_like(param)
    optimizer.zero_grad()
    assert param.grad is None


def test_tensor_betas_need_single_tensor_path():
    param = _param(2)
    param.grad = torch.ones_like(param)
    single = Padam([param], betas=(torch.tensor(0.9), torch.tensor(0.999)), foreach=False)
    single.step()
    assert torch.isfinite(param).all()
    other = _param(2)
    other.grad = torch.ones_like(other)
    with pytest.raises(ValueError, match="betas as Tensors"):
        Padam([other], betas=(torch.tensor(0.9), torch.tensor(0.999)), foreach=True).step()


@pytest.mark.filterwarnings("error")
def test_differentiable_step_carries_gradient_to_lr():
    """differentiable=True: the update is part of the autograd graph (as in torch.optim)."""
    leaf = _param(3)
    param = leaf.clone()  # a non-leaf, allowed in differentiable mode
    param.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    Padam([param], lr=lr, partial=0.5, differentiable=True).step()
    param.sum().backward()
    # d theta1 / d lr = -sqrt(bc2)/bc1 * m1 / (sqrt(v1) + eps) = -sign(g) (up to eps) at step 1.
    expected = -torch.sign(param.grad).sum()
    torch.testing.assert_close(lr.grad, expected, rtol=1e-6, atol=0)


def test_optimizer_pickles_and_deep_copies():
    param = _param(3)
    optimizer = Padam([param], partial=0.25, variant="torch")
    param.grad = torch.ones_like(param)
    optimizer.step()
    for clone in (pickle.loads(pickle.dumps(optimizer)), copy.deepcopy(optimizer)):
        assert clone.param_groups[0]["partial"] == 0.25
        assert clone.param_groups[0]["variant"] == "torch"
        state = next(iter(clone.state.values()))
        assert state["step"].item() == 1.0


def test_foreach_default_on_cpu_and_never_when_differentiable():
    from padam_torch.functional import _default_foreach

    params = [_param(2), _param(3, dtype=torch.bfloat16)]
    assert _default_foreach(params, differentiable=False)
    assert not _default_foreach(params, differentiable=True)


def test_tensor_partial_is_rejected_in_any_group():
    with pytest.raises(ValueError, match="Invalid partial value"):
        Padam([_param(2)], partial=torch.tensor(0.25))
    optimizer = Padam([_param(2)])
    with pytest.raises(ValueError, match="Invalid partial value"):
        optimizer.add_param_group({"params": [_param(3)], "partial": torch.tensor(0.25)})


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_functional_padam_updates_in_place_like_the_class(foreach):
    from padam_torch import padam

    param, twin = _param(4), _param(4)
    grad = torch.randn(4, dtype=torch.float64)
    twin.grad = grad.clone()
    Padam([twin], lr=0.01, partial=0.25, foreach=foreach, variant="reference").step()
    exp_avg, exp_avg_sq, max_exp_avg_sq = (torch.zeros_like(param) for _ in range(3))
    step = torch.tensor(0.0)
    hyperparameters = dict(
        amsgrad=True,
        beta1=0.9,
        beta2=0.999,
        lr=0.01,
        weight_decay=0.0,
        eps=1e-8,
        partial=0.25,
        maximize=False,
        decoupled_weight_decay=False,
    )
    with torch.no_grad():
        padam(
            [param],
            [grad],
            [exp_avg],
            [exp_avg_sq],
            [max_exp_avg_sq],
            [step],
            foreach=foreach,
            variant="reference",
            **hyperparameters,
        )
    assert torch.equal(param, twin) and step.item() == 1.0
    with pytest.raises(ValueError, match="Invalid variant value: 'adam'"):
        padam(
            [param],
            [grad],
            [exp_avg],
            [exp_avg_sq],
            [max_exp_avg_sq],
            [step],
            foreach=foreach,
            variant="adam",
            **hyperparameters,
        )


def test_named_parameters_are_accepted_and_saved():
    model = torch.nn.Linear(3, 2).double()
    optimizer = Padam(model.named_parameters(), lr=0.01)
    model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    optimizer.step()
    assert optimizer.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
