"""asv benchmarks of the canonical kernel's step on NumPy.

Sizes fit a 2-core machine; ``PADAM_BENCH_LARGE=1`` adds 2**24 elements. Every time_* method
does one Padam step over n float32 (or float64) elements: reads theta, g, m, v, v_hat and writes
new ones, 36 bytes per float32 element at the memory-traffic limit.
"""

from __future__ import annotations

import os

import numpy as np

import padam_core

SIZES = [2**12, 2**20] + ([2**24] if os.environ.get("PADAM_BENCH_LARGE") else [])


class KernelStep:
    """padam_core.padam_step on NumPy: variant x partial x size."""

    params = (["reference", "torch", "optax"], [0.125, 0.5, 0.3], SIZES)
    param_names = ("variant", "partial", "size")

    def setup(self, variant: str, partial: float, size: int) -> None:
        rng = np.random.default_rng(0)
        self.param = rng.normal(size=size).astype(np.float32)
        self.grad = rng.normal(size=size).astype(np.float32)
        self.exp_avg = (0.1 * rng.normal(size=size)).astype(np.float32)
        self.exp_avg_sq = np.abs(rng.normal(size=size)).astype(np.float32)
        self.max_exp_avg_sq = self.exp_avg_sq * 1.5
        self.hyperparameters = {"variant": variant, "partial": partial, "weight_decay": 1e-4}

    def time_step(self, variant: str, partial: float, size: int) -> None:
        padam_core.padam_step(
            self.param, self.grad, self.exp_avg, self.exp_avg_sq, self.max_exp_avg_sq, 10,
            **self.hyperparameters,
        )  # fmt: skip

    def peakmem_step(self, variant: str, partial: float, size: int) -> None:
        self.time_step(variant, partial, size)


class OptimizerStep:
    """padam_core.Padam.step (in place, with gradient checks) on a dict of NumPy arrays."""

    params = ([np.float32, np.float64], [2**20])
    param_names = ("dtype", "size")

    def setup(self, dtype: type, size: int) -> None:
        rng = np.random.default_rng(0)
        self.params_dict = {"w": rng.normal(size=size).astype(dtype)}
        self.grads = {"w": rng.normal(size=size).astype(dtype)}
        self.optimizer = padam_core.Padam(self.params_dict)
        self.optimizer.step(self.grads)  # compile (numba) outside the timing

    def time_step(self, dtype: type, size: int) -> None:
        self.optimizer.step(self.grads)


class FusedStep:
    """padam_core.fused_cpu.padam_step_inplace (numba): the same step, fused and in place."""

    params = (["reference", "torch", "optax"], [0.125, 0.5], SIZES)
    param_names = ("variant", "partial", "size")

    def setup(self, variant: str, partial: float, size: int) -> None:
        from padam_core import fused_cpu

        if not fused_cpu.available():
            raise NotImplementedError("numba is not installed")
        KernelStep.setup(self, variant, partial, size)
        self.step = fused_cpu.padam_step_inplace
        self.time_step(variant, partial, size)  # compile outside the timing

    def time_step(self, variant: str, partial: float, size: int) -> None:
        self.step(
            self.param, self.grad, self.exp_avg, self.exp_avg_sq, self.max_exp_avg_sq, 10,
            lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, **self.hyperparameters,
        )  # fmt: skip
