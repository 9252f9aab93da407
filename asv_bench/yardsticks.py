"""Yardsticks and small measurement helpers for padam_core's fused CPU step (issue 9).

Importable by the benchmark table (``asv_bench/compare.py``) and runnable on its own::

    PYTHONPATH=$PWD:$PWD/adapters python asv_bench/yardsticks.py

prints the fused step beside :func:`copy_loop` (N = 1e6, 1e7), 1000 arrays of 1e4 beside one of
1e7, p = 0.3 beside p = 1/8, and the extra memory of a fused step at N = 1e7.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

BYTES_PER_ELEMENT = 36  # float32: read theta, g, m, v, v_hat; write theta, m, v, v_hat
STEP = dict(
    lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, partial=0.125, weight_decay=0.0,
    decoupled_weight_decay=False, amsgrad=True, maximize=False, variant="reference",
)  # fmt: skip


@numba.njit(parallel=True, cache=True)
def copy_loop(theta, g, m, v, v_hat):
    """Reads 5 arrays and writes 4 (36 B per float32 element), no maths: the memory-traffic
    floor of a fused Padam step on the same threads. A permutation of the loads, so nothing
    can be folded away."""
    for i in numba.prange(theta.size):
        a, b, c, d, e = theta[i], g[i], m[i], v[i], v_hat[i]
        theta[i], m[i], v[i], v_hat[i] = b, a, e, d + c * 0


def arrays(size: int, count: int = 1, seed: int = 0) -> list[list[np.ndarray]]:
    """``count`` sets of [theta, g, m, v, v_hat], float32, ``size`` elements each, random."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        group = [rng.normal(size=size).astype(np.float32) for _ in range(5)]
        group[3], group[4] = np.abs(group[3]), np.abs(group[4]) * 1.5
        out.append(group)
    return out


def fused_step(groups: list[list[np.ndarray]], **overrides: Any) -> Callable[[], None]:
    """A no-argument callable: one :func:`padam_core.fused_cpu.multi_tensor_step` over groups."""
    from padam_core import fused_cpu

    columns = [list(column) for column in zip(*groups, strict=True)]
    hyperparameters = {**STEP, **overrides}

    def run() -> None:
        fused_cpu.multi_tensor_step(*columns, 10, **hyperparameters)

    return run


def interleaved(cases: dict[str, Callable[[], Any]], repeat: int = 25) -> dict[str, float]:
    """Median seconds of each case, the cases run in turn (so load changes hit all alike)."""
    for case in cases.values():
        case()  # warm-up (and compile, outside the timing)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def fused_vs_copy(size: int, repeat: int = 25) -> dict[str, float]:
    """Median seconds of the fused step and of :func:`copy_loop` on ``size`` elements."""
    ours, loop = arrays(size), arrays(size)[0]
    return interleaved({"fused": fused_step(ours), "copy": lambda: copy_loop(*loop)}, repeat)


def many_vs_one(count: int = 1000, size: int = 10_000, repeat: int = 15) -> dict[str, float]:
    """``count`` arrays of ``size`` elements in one call against one array of count * size."""
    many, one = arrays(size, count), arrays(size * count)
    return interleaved({"many": fused_step(many), "one": fused_step(one)}, repeat)


def power_ratio(size: int = 10**6, repeat: int = 25) -> dict[str, float]:
    """The fused step at p = 0.3 (exp2/log2 polynomials) and at p = 1/8 (square roots)."""
    general, chain = arrays(size), arrays(size)
    return interleaved(
        {"p=0.3": fused_step(general, partial=0.3), "p=1/8": fused_step(chain)}, repeat
    )


def extra_memory(size: int = 10**7) -> dict[str, float]:
    """Bytes a fused step allocates beyond params, grads and state (tracemalloc peak: NumPy
    reports its allocations to it), and that as a fraction of the state's bytes."""
    groups = arrays(size)
    step = fused_step(groups)
    step()  # compile / load outside the measurement
    gc.collect()
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state_bytes = sum(a.nbytes for a in groups[0][2:])
    return {"extra_bytes": float(peak), "fraction_of_state": peak / state_bytes}


def main() -> None:
    for size in (10**6, 10**7):
        result = fused_vs_copy(size)
        print(
            f"fused N={size:.0e}: {result['fused'] * 1e3:.2f} ms, copy loop "
            f"{result['copy'] * 1e3:.2f} ms, ratio {result['fused'] / result['copy']:.2f} "
            f"({BYTES_PER_ELEMENT * size / result['fused'] / 1e9:.1f} GB/s)"
        )
    result = many_vs_one()
    print(
        f"1000 x 1e4: {result['many'] * 1e3:.2f} ms, 1 x 1e7: {result['one'] * 1e3:.2f} ms, "
        f"ratio {result['many'] / result['one']:.2f}"
    )
    result = power_ratio()
    print(
        f"p=0.3: {result['p=0.3'] * 1e3:.2f} ms, p=1/8: {result['p=1/8'] * 1e3:.2f} ms, "
        f"ratio {result['p=0.3'] / result['p=1/8']:.2f}"
    )
    result = extra_memory()
    print(
        f"extra memory, N=1e7: {result['extra_bytes'] / 1024:.1f} KiB = "
        f"{100 * result['fraction_of_state']:.4f}% of the state"
    )


if __name__ == "__main__":
    main()
