"""Regression tests for issue 10, written from its description: padam_torch's causes."""

from __future__ import annotations

import math

import pytest

from tests.robustness.snapshot import assert_unchanged_on_error

torch = pytest.importorskip("torch")
from padam_torch import Padam  # noqa: E402

IMPLEMENTATIONS = [pytest.param({"foreach": True}, id="foreach"),
                   pytest.param({"foreach": False}, id="single")]  # fmt: skip


def _trained(implementation, **hyperparameters):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4))
    optimizer = Padam([weight], **implementation, **hyperparameters)
    weight.grad = torch.randn(4)
    optimizer.step()
    weight.grad = torch.randn(4)
    return weight, optimizer


# ---- cause 1: a failing step still advanced state --------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("eps", "1e-8"), ("eps", None), ("weight_decay", [0.1]), ("lr", 1j), ("lr", "0.1"),
     ("weight_decay", torch.tensor([0.1, 0.2])), ("eps", 0.0)],
)  # fmt: skip
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_cause1_bad_values_are_refused_before_any_state_moves(implementation, name, value):
    with pytest.raises(ValueError, match=name):
        Padam([torch.nn.Parameter(torch.ones(2))], **{name: value})
    with pytest.raises(ValueError, match="betas"):
        Padam([torch.nn.Parameter(torch.ones(2))], betas=("0.9", 0.999))
    # A group edited after construction (as a scheduler or a user would): three failed steps
    # leave step, moments and parameter exactly as they were.
    weight, optimizer = _trained(implementation)
    optimizer.param_groups[0][name] = value
    for _ in range(3):
        assert_unchanged_on_error(optimizer.step, optimizer, weight, match=name)
    assert optimizer.state[weight]["step"].item() == 1


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_cause1_a_loaded_group_with_a_bad_lr_is_refused(implementation):
    weight, optimizer = _trained(implementation)
    for bad in ("0.1", None):
        saved = optimizer.state_dict()
        saved["param_groups"][0]["lr"] = bad
        assert_unchanged_on_error(lambda s=saved: optimizer.load_state_dict(s), optimizer, weight,
                                  match="lr")  # fmt: skip


def test_cause1_a_second_bad_group_stops_the_first_too():
    first = torch.nn.Parameter(torch.ones(2))
    second = torch.nn.Parameter(torch.ones(2))
    optimizer = Padam([{"params": [first]}, {"params": [second]}])
    first.grad, second.grad = torch.ones(2), torch.ones(2)
    optimizer.param_groups[1]["eps"] = "oops"
    assert_unchanged_on_error(optimizer.step, optimizer, first, second, match="param group 1")
    assert len(optimizer.state) == 0  # no state was created for the first group either


# ---- cause 8: checkpoint values ------------------------------------------------------------


def _corrupt(key, value):
    def edit(state):
        state[key] = value

    return edit


CORRUPTIONS = [
    ("exp_avg", lambda s: s["exp_avg"].fill_(math.nan), "NaN or Inf"),
    ("exp_avg_sq", lambda s: s["exp_avg_sq"].fill_(math.inf), "NaN or Inf"),
    ("exp_avg_sq", lambda s: s["exp_avg_sq"].fill_(-1.0), "negative"),
    ("max_exp_avg_sq", lambda s: s["max_exp_avg_sq"].fill_(-1.0), "negative"),
    ("step", _corrupt("step", torch.tensor(2.5)), "whole number"),
    ("step", _corrupt("step", True), "whole number"),
    ("step", _corrupt("step", 2.5), "whole number"),
    ("step", _corrupt("step", torch.tensor(3, dtype=torch.int64)), "int64"),
    ("step", _corrupt("step", torch.tensor(-1.0)), "whole number"),
]


CORRUPTION_IDS = [f"{key}-{index}" for index, (key, _, _) in enumerate(CORRUPTIONS)]


@pytest.mark.parametrize(("key", "corrupt", "message"), CORRUPTIONS, ids=CORRUPTION_IDS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_cause8_checkpoint_values_are_checked(implementation, key, corrupt, message):
    weight, optimizer = _trained(implementation)
    saved = optimizer.state_dict()
    saved = {"state": {k: {n: (t.clone() if isinstance(t, torch.Tensor) else t)
                           for n, t in v.items()} for k, v in saved["state"].items()},
             "param_groups": saved["param_groups"]}  # fmt: skip
    corrupt(saved["state"][0])
    error = assert_unchanged_on_error(lambda: optimizer.load_state_dict(saved), optimizer, weight)
    assert isinstance(error, ValueError) and key in str(error) and message in str(error)
    optimizer.step()  # still usable
    assert torch.isfinite(weight).all()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_cause8_a_whole_float_step_loads(implementation):
    weight, optimizer = _trained(implementation)
    saved = optimizer.state_dict()
    saved["state"][0]["step"] = 7.0
    optimizer.load_state_dict(saved)
    optimizer.step()
    assert optimizer.state[weight]["step"].item() == 8
