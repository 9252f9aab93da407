"""Figures quoted in docs/torch.md; not a test. Run from the repository root:

    PYTHONPATH=.:adapters python -m tests.torch.measure

1. Worst relative error (max|x - ref| / max|ref|) against the padam_core float64 reference over
   the conformance grid of test_torch_conformance.py (3 variants x amsgrad x 6 flag cases,
   100 steps of the digits MLP's gradients), per dtype and implementation.
2. Median time of one step on the CPU (1 thread) for 10 float32 tensors, 786,432 elements.
"""

from __future__ import annotations

import itertools

import torch
from torch.utils import benchmark

from padam_torch import Padam
from tests.torch.helpers import recorded_gradients, relative_error, torch_trajectory
from tests.torch.test_torch_conformance import CASES, _oracle


def worst_errors() -> None:
    initial, gradients = recorded_gradients()
    worst: dict[tuple[str, str], float] = {}
    grid = itertools.product(
        ("reference", "torch", "optax"),
        (True, False),
        range(len(CASES)),
        (torch.float64, torch.float32),
        (False, True),
    )
    for variant, amsgrad, case, dtype, foreach in grid:
        kwargs = {"lr": 0.01, "variant": variant, "amsgrad": amsgrad, **CASES[case]}
        params, _ = torch_trajectory(initial, gradients, dtype, foreach=foreach, **kwargs)
        reference = _oracle(variant, amsgrad, case, dtype)
        error = max(relative_error(p, r) for p, r in zip(params, reference, strict=True))
        key = (str(dtype), "foreach" if foreach else "single-tensor")
        worst[key] = max(worst.get(key, 0.0), error)
    for (dtype, path), error in worst.items():
        print(f"{dtype:14s} {path:14s} worst relative error {error:.2e}")


def step_times() -> None:
    torch.manual_seed(0)
    shapes = [(256, 256)] * 8 + [(512, 256)] * 2
    params = [torch.randn(shape, requires_grad=True) for shape in shapes]
    for param in params:
        param.grad = torch.randn_like(param)
    candidates = {
        "torch.optim.Adam(amsgrad=True)": lambda f: torch.optim.Adam(
            params, amsgrad=True, foreach=f
        ),
        "Padam(partial=0.5)": lambda f: Padam(params, partial=0.5, foreach=f),
        "Padam() (partial=0.125)": lambda f: Padam(params, foreach=f),
        "Padam(partial=0.3) (pow)": lambda f: Padam(params, partial=0.3, foreach=f),
    }
    for name, make in candidates.items():
        for foreach in (False, True):
            optimizer = make(foreach)
            optimizer.step()
            timer = benchmark.Timer("optimizer.step()", globals={"optimizer": optimizer})
            median = timer.blocked_autorange(min_run_time=1.0).median
            print(f"{name:32s} foreach={foreach!s:5s} {median * 1e3:6.2f} ms/step")


if __name__ == "__main__":
    torch.set_num_threads(1)
    worst_errors()
    step_times()
