"""state_dict and load_state_dict: bitwise resume, Adam interchange, bad checkpoints."""

from __future__ import annotations

import io

import pytest
import torch

from padam_torch import Padam
from tests.torch.helpers import assert_state_dicts_equal, snapshot

STEPS = 24


def _model(seed: int = 0) -> torch.nn.Module:
    """Mixed dtypes on purpose: a float64, a float32 and a bfloat16 layer."""
    torch.manual_seed(seed)
    return torch.nn.ModuleList(
        [
            torch.nn.Linear(5, 4).double(),
            torch.nn.Linear(4, 3),
            torch.nn.Linear(3, 2).to(torch.bfloat16),
        ]
    )


def _train(model, optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        optimizer.zero_grad()
        for layer in model:
            x = torch.randn(8, layer.in_features, generator=generator).to(layer.weight.dtype)
            layer(x).float().pow(2).mean().backward()
        optimizer.step()


def _round_trip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"amsgrad": False, "variant": "torch"}, {"variant": "optax", "weight_decay": 1e-2}],
    ids=["default", "torch-no-amsgrad", "optax-l2"],
)
def test_resume_mid_run_is_bitwise_identical(kwargs, foreach):
    straight = _model()
    straight_optimizer = Padam(straight.parameters(), lr=0.01, foreach=foreach, **kwargs)
    _train(straight, straight_optimizer, range(STEPS))

    first = _model()
    first_optimizer = Padam(first.parameters(), lr=0.01, foreach=foreach, **kwargs)
    _train(first, first_optimizer, range(STEPS // 2))
    model_state = _round_trip(first.state_dict())
    optimizer_state = _round_trip(first_optimizer.state_dict())

    resumed = _model(seed=1)  # fresh weights, overwritten by the checkpoint
    resumed.load_state_dict(model_state)
    resumed_optimizer = Padam(resumed.parameters(), lr=0.5, foreach=foreach, **kwargs)
    resumed_optimizer.load_state_dict(optimizer_state)
    _train(resumed, resumed_optimizer, range(STEPS // 2, STEPS))

    for expected, actual in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert actual.dtype == expected.dtype
        assert torch.equal(actual, expected)
    assert_state_dicts_equal(straight_optimizer.state_dict(), resumed_optimizer.state_dict())


def test_low_precision_state_stays_float32_across_load():
    model = _model()
    optimizer = Padam(model.parameters(), lr=0.01)
    _train(model, optimizer, range(3))
    bf16_weight = model[2].weight
    saved = optimizer.state[bf16_weight]["exp_avg_sq"].clone()
    assert saved.dtype == torch.float32

    fresh = Padam(model.parameters(), lr=0.01)
    fresh.load_state_dict(_round_trip(optimizer.state_dict()))
    loaded = fresh.state[bf16_weight]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert loaded[key].dtype == torch.float32, key  # torch alone would cast to bfloat16
    assert torch.equal(loaded["exp_avg_sq"], saved)
    assert loaded["step"].dtype == torch.float32


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_adam_amsgrad_checkpoint_continues_as_adam(foreach):
    """An Adam(amsgrad=True) checkpoint loads into Padam; with p = 1/2 torch-style the run
    continues exactly as Adam would (numerics.md), so nothing of the state is lost."""
    torch.manual_seed(0)
    adam_model = torch.nn.Linear(6, 3).double()
    adam = torch.optim.Adam(adam_model.parameters(), lr=0.01, amsgrad=True, foreach=foreach)
    _train_linear(adam_model, adam, range(10))
    model_state = _round_trip(adam_model.state_dict())
    adam_state = _round_trip(adam.state_dict())
    _train_linear(adam_model, adam, range(10, 20))

    padam_model = torch.nn.Linear(6, 3).double()
    padam_model.load_state_dict(model_state)
    padam = Padam(padam_model.parameters(), partial=0.5, variant="torch", foreach=foreach)
    padam.load_state_dict(adam_state)
    # Keys Adam's checkpoint lacks keep Padam's values; the ones it has (lr) are loaded.
    group = padam.param_groups[0]
    assert (group["partial"], group["variant"], group["lr"]) == (0.5, "torch", 0.01)
    _train_linear(padam_model, padam, range(10, 20))
    for expected, actual in zip(adam_model.parameters(), padam_model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)


def test_adam_checkpoint_of_bfloat16_model_is_upcast():
    model = torch.nn.Linear(4, 2).to(torch.bfloat16)
    adam = torch.optim.Adam(model.parameters(), amsgrad=True)
    _train_linear(model, adam, range(2))
    assert adam.state[model.weight]["exp_avg"].dtype == torch.bfloat16
    padam = Padam(model.parameters())
    padam.load_state_dict(_round_trip(adam.state_dict()))
    assert padam.state[model.weight]["exp_avg"].dtype == torch.float32
    _train_linear(model, padam, range(2, 5))
    assert torch.isfinite(model.weight).all()


def _train_linear(model, optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(8, model.in_features, generator=generator).to(model.weight.dtype)
        optimizer.zero_grad()
        model(x).float().pow(2).mean().backward()
        optimizer.step()


def _corrupt(state_dict, how: str):
    state = state_dict["state"]
    if how == "wrong shape":
        state[0]["exp_avg"] = torch.zeros(7, 7)
    elif how == "missing exp_avg_sq":
        del state[0]["exp_avg_sq"]
    elif how == "missing max_exp_avg_sq":
        del state[1]["max_exp_avg_sq"]
    elif how == "step not scalar":
        state[0]["step"] = torch.ones(3)
    elif how == "negative step":
        state[0]["step"] = torch.tensor(-1.0)
    elif how == "integer moment":
        state[0]["exp_avg"] = state[0]["exp_avg"].long()
    elif how == "invalid partial":
        state_dict["param_groups"][0]["partial"] = 0.8
    elif how == "extra group":
        state_dict["param_groups"].append(dict(state_dict["param_groups"][0]))
    elif how == "group size":
        state_dict["param_groups"][0]["params"] = state_dict["param_groups"][0]["params"][:1]
    elif how == "no state key":
        del state_dict["state"]
    return state_dict


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("wrong shape", r"'exp_avg' has shape \(7, 7\), the parameter has shape \(4, 5\)"),
        ("missing exp_avg_sq", r"missing \['exp_avg_sq'\]"),
        ("missing max_exp_avg_sq", r"missing \['max_exp_avg_sq'\]"),
        ("step not scalar", "'step' must hold one number"),
        ("negative step", "'step' must be a whole number >= 0"),
        ("integer moment", "not floating"),
        ("invalid partial", "loaded param group 0: Invalid partial value: 0.8"),
        ("extra group", "loaded state dict has 2 parameter groups, the optimizer has 1"),
        ("group size", "loaded param group 0 has 1 parameters, the optimizer's has 6"),
        ("no state key", "missing the key 'state'"),
    ],
)
def test_bad_checkpoint_is_rejected_and_changes_nothing(how, message):
    model = _model()
    optimizer = Padam(model.parameters(), lr=0.01)
    _train(model, optimizer, range(2))
    checkpoint = _corrupt(_round_trip(optimizer.state_dict()), how)

    target_model = _model(seed=3)
    target = Padam(target_model.parameters(), lr=0.02, partial=0.25)
    _train(target_model, target, range(1))
    before = snapshot(target)
    weights = [p.detach().clone() for p in target_model.parameters()]
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(checkpoint)
    assert_state_dicts_equal(before, target.state_dict())
    for weight, param in zip(weights, target_model.parameters(), strict=True):
        assert torch.equal(weight, param)


def test_padam_checkpoint_loads_back_into_adam():
    """The other direction: Padam(p = 1/2, torch-style) state continues under Adam(amsgrad)."""
    torch.manual_seed(0)
    padam_model = torch.nn.Linear(6, 3).double()
    padam = Padam(padam_model.parameters(), lr=0.01, partial=0.5, variant="torch")
    _train_linear(padam_model, padam, range(10))
    model_state = _round_trip(padam_model.state_dict())
    padam_state = _round_trip(padam.state_dict())
    _train_linear(padam_model, padam, range(10, 20))

    adam_model = torch.nn.Linear(6, 3).double()
    adam_model.load_state_dict(model_state)
    adam = torch.optim.Adam(adam_model.parameters(), amsgrad=True)
    adam.load_state_dict(padam_state)
    _train_linear(adam_model, adam, range(10, 20))
    for expected, actual in zip(padam_model.parameters(), adam_model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)


def test_loading_a_checkpoint_that_switches_amsgrad_warns():
    """An Adam checkpoint (amsgrad=False by default) turns Padam's running max off: say so."""
    model = torch.nn.Linear(3, 2)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    adam.step()
    padam = Padam(model.parameters())
    with pytest.warns(UserWarning, match=r"amsgrad=False \(it was True\)"):
        padam.load_state_dict(adam.state_dict())
    assert padam.param_groups[0]["amsgrad"] is False
    assert padam.param_groups[0]["lr"] == 1e-3  # torch's rule: the checkpoint's groups win


def test_loading_a_checkpoint_that_keeps_amsgrad_does_not_warn(recwarn):
    model = torch.nn.Linear(3, 2)
    source = Padam(model.parameters())
    Padam(model.parameters()).load_state_dict(source.state_dict())
    assert not [w for w in recwarn if "amsgrad" in str(w.message)]
