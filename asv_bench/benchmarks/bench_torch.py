"""asv benchmarks of padam_torch beside torch's own fused AMSGrad.

Every ``time_step`` is one optimizer step over float32 tensors whose gradients are already set;
``setup`` takes the first steps, so numba compilation and state creation are never timed (and
``asv run --quick`` measures the steady state). Sizes fit a 2-core machine; with
``PADAM_BENCH_LARGE=1`` the grid adds 1e7-element tensors and ResNet-50-sized totals.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from .shapes import RESNET18_SHAPES

LARGE = bool(os.environ.get("PADAM_BENCH_LARGE"))
ROOT = Path(__file__).resolve().parents[2]

#: name -> list of parameter shapes
LAYOUTS = {
    "1e5": [(10**5,)],
    "1e6": [(10**6,)],
    "resnet18": RESNET18_SHAPES,
    "1000x1e4": [(10**4,)] * 1000,
    **({"1e7": [(10**7,)], "4000x1e4": [(10**4,)] * 4000} if LARGE else {}),
}


def _tensors(shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        param = torch.randn(shape, generator=generator).requires_grad_()
        param.grad = torch.randn(shape, generator=generator)
        params.append(param)
    return params


def _optimizer(name: str, params: list[torch.Tensor], partial: float = 0.125):
    import padam_torch

    if name == "padam":  # the default: the fused kernel on CPU where numba is installed
        return padam_torch.Padam(params, lr=1e-3, partial=partial)
    if name == "padam_foreach":
        return padam_torch.Padam(params, lr=1e-3, partial=partial, foreach=True)
    if name == "torch_fused_amsgrad":
        return torch.optim.Adam(params, lr=1e-3, amsgrad=True, fused=True)
    if name == "torch_foreach_amsgrad":
        return torch.optim.Adam(params, lr=1e-3, amsgrad=True, foreach=True)
    raise ValueError(name)


class TorchStep:
    """One step: padam_torch (default and foreach) beside torch Adam(amsgrad=True)."""

    params = (
        ["padam", "padam_foreach", "torch_fused_amsgrad", "torch_foreach_amsgrad"],
        list(LAYOUTS),
    )
    param_names = ("optimizer", "layout")
    timeout = 300

    def setup(self, optimizer: str, layout: str) -> None:
        self.optimizer = _optimizer(optimizer, _tensors(LAYOUTS[layout]))
        self.optimizer.step()  # state and compiled code, outside the timing
        self.optimizer.step()

    def time_step(self, optimizer: str, layout: str) -> None:
        self.optimizer.step()

    def peakmem_step(self, optimizer: str, layout: str) -> None:
        self.optimizer.step()


class TorchPower:
    """General p (pow-free fast power) against the square-root chain, default path, 1e6."""

    params = ([0.125, 0.3, 0.5, "scheduled"],)
    param_names = ("partial",)

    def setup(self, partial) -> None:
        if partial == "scheduled":
            raise NotImplementedError("partial schedules land with the schedules branch")
        self.optimizer = _optimizer("padam", _tensors(LAYOUTS["1e6"]), partial=partial)
        self.optimizer.step()

    def time_step(self, partial) -> None:
        self.optimizer.step()


COLD = """
import time, torch, padam_torch
param = torch.randn(1000, requires_grad=True)
param.grad = torch.randn(1000)
optimizer = padam_torch.Padam([param], fused=True)
start = time.perf_counter()
optimizer.step()
print(time.perf_counter() - start)
"""


class TorchColdStart:
    """Seconds of the first fused step in a fresh process (numba's disk cache warmed in setup)."""

    timeout = 300
    unit = "seconds"

    def _run(self) -> float:
        paths = [str(ROOT), str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")]
        path = os.pathsep.join(paths)
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(COLD)], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": path}, check=True,
        )  # fmt: skip
        return float(result.stdout.strip().splitlines()[-1])

    def setup(self) -> None:
        self._run()  # the first process ever may compile and fill the cache

    def track_first_step(self) -> float:
        return self._run()

    track_first_step.unit = "seconds"
