"""padam_torch.Padam with ``partial`` as a schedule and the non-finite guard (issue 11)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

import padam_core
from padam_core import schedules
from padam_torch import Padam
from padam_torch import fused as fused_path

SCHEDULES = {
    "constant": schedules.constant(0.25),
    "linear": schedules.linear(0.5, 0.125, steps=6),
    "cosine": schedules.cosine(0.5, 0.0, steps=7),
    "piecewise": schedules.piecewise([3, 6], [0.5, 0.25, 0.125]),
}
PATHS: dict[str, dict[str, Any]] = {
    "fused": {},  # the default: the fused path where numba is installed
    "foreach": {"foreach": True},
    "single": {"foreach": False, "fused": False},
}
STEPS = 10
SHAPES = [(7,), (3, 4), (5,)]


def _grads(seed: int = 0) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=generator) for shape in SHAPES] for _ in range(STEPS)]


def _params(seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).requires_grad_() for shape in SHAPES]


def _snapshot(optimizer: Padam, params: list[torch.Tensor]) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in params]
    for param in params:
        for value in optimizer.state.get(param, {}).values():
            tensors.append(value.detach().clone())
    return tensors


def _assert_bitwise(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x.view(-1).view(torch.uint8), y.view(-1).view(torch.uint8))


def _run(optimizer: Padam, params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.clone()
        optimizer.step()


def _needs_path(path: str) -> None:
    if path == "fused" and fused_path.cpu_kernel() is None:
        pytest.skip("numba is not installed: no fused path")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_trajectory_matches_core_loop(name: str, path: str) -> None:
    _needs_path(path)
    schedule = SCHEDULES[name]
    grads = _grads()
    params = _params()
    optimizer = Padam(params, lr=0.01, partial=schedule, **PATHS[path])
    _run(optimizer, params, grads)

    reference = [p.detach().numpy().copy() for p in _params()]
    state = [
        [np.zeros_like(r), np.zeros_like(r), np.zeros_like(r)] for r in reference
    ]  # m, v, v_hat
    for t in range(1, STEPS + 1):
        partial = schedule(t)
        for index, param in enumerate(reference):
            result = padam_core.padam_step(
                param, grads[t - 1][index].numpy(), *state[index], t, lr=0.01, partial=partial
            )
            reference[index] = np.asarray(result.param)
            state[index] = [
                np.asarray(result.exp_avg),
                np.asarray(result.exp_avg_sq),
                np.asarray(result.max_exp_avg_sq),
            ]
    for param, expected in zip(params, reference, strict=True):
        error = np.max(np.abs(param.detach().numpy() - expected)) / np.max(np.abs(expected))
        assert error <= 1e-5, (name, path, error)
    # the schedule really changed p (not the constant): a constant-p run ends elsewhere
    if name != "constant":
        constant_params = _params()
        constant = Padam(constant_params, lr=0.01, partial=schedule(STEPS), **PATHS[path])
        _run(constant, constant_params, grads)
        assert not torch.equal(constant_params[0], params[0])


@pytest.mark.parametrize("path", PATHS)
def test_counts_differ_inside_a_group(path: str) -> None:
    """A param without a gradient skips steps: it gets p of its own count."""
    _needs_path(path)
    schedule = SCHEDULES["piecewise"]
    grads = _grads()
    params = _params()
    optimizer = Padam(params, lr=0.01, partial=schedule, **PATHS[path])
    lone = _params()
    lone_optimizer = Padam(lone[2:], lr=0.01, partial=schedule, **PATHS[path])
    for t, step_grads in enumerate(grads):
        for index, (param, grad) in enumerate(zip(params, step_grads, strict=True)):
            param.grad = None if (index == 2 and t < 4) else grad.clone()
        optimizer.step()
        if t >= 4:
            lone[2].grad = step_grads[2].clone()
            lone_optimizer.step()
    assert optimizer.state[params[2]]["step"].item() == STEPS - 4
    assert optimizer.state[params[0]]["step"].item() == STEPS
    torch.testing.assert_close(params[2], lone[2], rtol=1e-6, atol=0)


@pytest.mark.parametrize("path", PATHS)
def test_state_dict_round_trip_mid_run_is_bitwise(path: str) -> None:
    _needs_path(path)
    grads = _grads()
    params = _params()
    optimizer = Padam(params, lr=0.01, partial=SCHEDULES["cosine"], **PATHS[path])
    _run(optimizer, params, grads)

    resumed = _params()
    first = Padam(resumed, lr=0.01, partial=SCHEDULES["cosine"], **PATHS[path])
    _run(first, resumed, grads[:4])
    saved = copy.deepcopy(first.state_dict())
    assert saved["param_groups"][0]["partial"] == SCHEDULES["cosine"].get_config()
    second = Padam(resumed, lr=0.01, partial=0.5, **PATHS[path])
    second.load_state_dict(saved)
    assert second.param_groups[0]["partial"] == SCHEDULES["cosine"]
    _run(second, resumed, grads[4:])
    _assert_bitwise([p.detach() for p in params], [p.detach() for p in resumed])


def test_plain_callable_runs_but_state_dict_refuses_it() -> None:
    params = _params()
    optimizer = Padam(params, lr=0.01, partial=lambda t: 0.5 if t < 3 else 0.125)
    _run(optimizer, params, _grads()[:3])
    with pytest.raises(ValueError, match=r"padam_core\.schedules"):
        optimizer.state_dict()


@pytest.mark.parametrize("path", PATHS)
def test_bad_partial(path: str) -> None:
    _needs_path(path)
    with pytest.raises(ValueError, match="partial"):
        Padam(_params(), partial="0.1")
    with pytest.raises(ValueError, match="capturable"):
        Padam(_params(), partial=SCHEDULES["linear"], capturable=True)
    params = _params()
    optimizer = Padam(params, lr=0.01, partial=lambda t: 0.25 if t < 3 else 0.7, **PATHS[path])
    grads = _grads()
    _run(optimizer, params, grads[:2])
    before = _snapshot(optimizer, params)
    for param, grad in zip(params, grads[2], strict=True):
        param.grad = grad
    with pytest.raises(ValueError, match=r"param group 0: partial schedule .* at step 3"):
        optimizer.step()
    _assert_bitwise(before, _snapshot(optimizer, params))
    # a bad saved config is refused before anything changes
    good = Padam(params, lr=0.01, partial=SCHEDULES["linear"], **PATHS[path])
    saved = good.state_dict()
    saved["param_groups"][0]["partial"] = {"schedule": "linear", "start": 0.9, "end": 0, "steps": 3}
    with pytest.raises(ValueError, match="loaded param group 0"):
        good.load_state_dict(saved)
    assert good.param_groups[0]["partial"] == SCHEDULES["linear"]


def test_state_file_records_schedule_config(tmp_path: Any) -> None:
    import json

    from safetensors import safe_open

    from padam_torch import load_state, save_state

    params = _params()
    optimizer = Padam(params, lr=0.01, partial=SCHEDULES["linear"])
    _run(optimizer, params, _grads()[:2])
    save_state(tmp_path / "state.safetensors", optimizer)
    with safe_open(str(tmp_path / "state.safetensors"), "np") as handle:
        recorded = json.loads(handle.metadata()["hyperparameters"])
    assert recorded["partial"] == SCHEDULES["linear"].get_config()
    other = Padam(_params(), lr=0.01, partial=SCHEDULES["linear"])
    load_state(tmp_path / "state.safetensors", other)
    assert other.state[other.param_groups[0]["params"][0]]["step"].item() == 2


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize("path", PATHS)
def test_nan_skips_the_whole_step_bitwise(path: str) -> None:
    _needs_path(path)
    grads = _grads()
    params = _params()
    # two groups: the NaN is in one grad of the second
    optimizer = Padam(
        [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}],
        lr=0.01,
        partial=SCHEDULES["linear"],
        skip_nonfinite=True,
        **PATHS[path],
    )
    _run(optimizer, params, grads[:3])
    before = _snapshot(optimizer, params)
    for param, grad in zip(params, grads[3], strict=True):
        param.grad = grad.clone()
    params[2].grad[1] = float("nan")
    optimizer.step()
    _assert_bitwise(before, _snapshot(optimizer, params))
    assert optimizer.skipped_steps == 1
    params[2].grad[1] = float("inf")
    optimizer.step()
    assert optimizer.skipped_steps == 2
    saved = optimizer.state_dict()
    assert saved["skipped_steps"] == 2
    _run(optimizer, params, grads[4:])

    clean = _params()
    never = Padam(
        [{"params": clean[:2]}, {"params": clean[2:], "lr": 0.02}],
        lr=0.01,
        partial=SCHEDULES["linear"],
        skip_nonfinite=True,
        **PATHS[path],
    )
    _run(never, clean, grads[:3] + grads[4:])
    _assert_bitwise(_snapshot(optimizer, params), _snapshot(never, clean))
    assert never.skipped_steps == 0

    import pickle

    assert pickle.loads(pickle.dumps(optimizer)).skipped_steps == 2
    restored = Padam([{"params": clean[:2]}, {"params": clean[2:]}], skip_nonfinite=True)
    restored.load_state_dict(saved)
    assert restored.skipped_steps == 2


def test_nan_before_any_state_creates_none() -> None:
    params = _params()
    optimizer = Padam(params, skip_nonfinite=True)
    for param in params:
        param.grad = torch.ones_like(param)
    params[0].grad[0] = float("nan")
    optimizer.step()
    assert len(optimizer.state) == 0 and optimizer.skipped_steps == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.complex64])
def test_guard_low_precision_and_complex(dtype: torch.dtype) -> None:
    params = [torch.zeros(4, dtype=dtype, requires_grad=True)]
    optimizer = Padam(params, skip_nonfinite=True)
    params[0].grad = torch.ones(4, dtype=dtype)
    optimizer.step()
    assert optimizer.skipped_steps == 0
    params[0].grad = torch.ones(4, dtype=dtype)
    params[0].grad[2] = float("inf")
    before = params[0].detach().clone()
    optimizer.step()
    assert optimizer.skipped_steps == 1 and torch.equal(before, params[0].detach())


@pytest.mark.parametrize("path", PATHS)
def test_guard_off_propagates_like_adam(path: str) -> None:
    _needs_path(path)
    grads = _grads()
    grads[2][0][3] = float("nan")
    params = _params()
    optimizer = Padam(params, lr=0.01, partial=0.5, **PATHS[path])
    _run(optimizer, params, grads)
    adam_params = _params()
    adam = torch.optim.Adam(adam_params, lr=0.01, amsgrad=True)
    for step_grads in grads:
        for param, grad in zip(adam_params, step_grads, strict=True):
            param.grad = grad.clone()
        adam.step()
    assert optimizer.skipped_steps == 0
    for param, expected in zip(params, adam_params, strict=True):
        assert torch.equal(torch.isnan(param), torch.isnan(expected))
        torch.testing.assert_close(param, expected, equal_nan=True, rtol=1e-5, atol=1e-6)
    assert torch.isnan(params[0]).any()


def test_bad_skip_nonfinite_and_adam_checkpoint() -> None:
    with pytest.raises(ValueError, match="skip_nonfinite"):
        Padam(_params(), skip_nonfinite="yes")  # type: ignore[arg-type]
    params = _params()
    adam = torch.optim.Adam(params, lr=0.01, amsgrad=True)
    _run(adam, params, _grads()[:2])  # type: ignore[arg-type]
    optimizer = Padam(params, lr=0.01, skip_nonfinite=True)
    optimizer.skipped_steps = 3
    optimizer.load_state_dict(adam.state_dict())  # no skipped_steps key: tolerated
    assert optimizer.skipped_steps == 0
    saved = optimizer.state_dict()
    saved["skipped_steps"] = -1
    with pytest.raises(ValueError, match="skipped_steps"):
        optimizer.load_state_dict(saved)


def test_guard_under_torch_compile() -> None:
    """Under torch.compile the guard reads the check on the host (a graph break): still skips."""
    params = _params()
    optimizer = Padam(params, lr=0.01, skip_nonfinite=True, foreach=True)
    step = torch.compile(optimizer.step)
    grads = _grads()
    for param, grad in zip(params, grads[0], strict=True):
        param.grad = grad.clone()
    step()
    before = _snapshot(optimizer, params)
    for param, grad in zip(params, grads[1], strict=True):
        param.grad = grad.clone()
    params[1].grad[0, 0] = float("nan")
    step()
    _assert_bitwise(before, _snapshot(optimizer, params))
    assert optimizer.skipped_steps == 1


def test_schedule_under_torch_compile() -> None:
    """A schedule under torch.compile: p read from the host count (a graph break), same run."""
    grads = _grads()
    params, compiled_params = _params(), _params()
    eager = Padam(params, lr=0.01, partial=SCHEDULES["piecewise"], foreach=True)
    compiled = Padam(compiled_params, lr=0.01, partial=SCHEDULES["piecewise"], foreach=True)
    step = torch.compile(compiled.step)
    for step_grads in grads:
        for param, other, grad in zip(params, compiled_params, step_grads, strict=True):
            param.grad, other.grad = grad.clone(), grad.clone()
        eager.step()
        step()
    for param, other in zip(params, compiled_params, strict=True):
        torch.testing.assert_close(other, param, rtol=1e-6, atol=0)


def test_number_partial_guard_off_compiles_whole() -> None:
    """Neither the schedule nor the guard costs a graph break when not used."""
    params = _params()
    for param, grad in zip(params, _grads()[0], strict=True):
        param.grad = grad
    optimizer = Padam(params, lr=0.01, foreach=True)
    optimizer.step()
    explained = torch._dynamo.explain(optimizer.step)()
    assert explained.graph_break_count == 0
