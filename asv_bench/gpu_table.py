"""The GPU rows of issue 9's table, measured on one CUDA GPU (run by ``scripts/gpu_check.sh``).

Standalone: ``PYTHONPATH=.:adapters python asv_bench/gpu_table.py [--quick]``. Needs CuPy and a
GPU; the torch rows also need torch with CUDA. Prints a Markdown table:

* the fused CuPy kernel (``padam_core.fused_cuda``) on one tensor of N >= 1e8 float32 elements:
  its effective bandwidth (36 bytes per element with amsgrad: theta, g, m, v, v_hat read; theta,
  m, v, v_hat written) against the device-to-device copy bandwidth measured on the same GPU
  (``cudaMemcpyAsync``, bytes read + written). Target: >= 80%.
* ``padam_torch.Padam`` (``fused=True``, and the default) on CUDA against
  ``torch.optim.Adam(amsgrad=True, fused=True)``, for ResNet-18's 62 parameter tensors (CIFAR
  variant, 11.2M) and for 1000 tensors of 1e4 elements. Target: <= 1.0x. Where padam_torch
  cannot run on CUDA yet, the row says 'not available' with the error.

Times are medians over interleaved rounds (CUDA events around a batch of steps), so the two
sides of a ratio see the same clocks and the same neighbours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from typing import Any

TARGET_BANDWIDTH = 0.80
TARGET_TORCH = 1.0


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The 62 parameter shapes of padam_compare's ResNet-18 (CIFAR variant, 10 classes)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    width_in = 64
    for width in (64, 128, 256, 512):
        for block in range(2):
            first_in = width_in if block == 0 else width
            shapes += [(width, first_in, 3, 3), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            if block == 0 and first_in != width:  # the projection shortcut
                shapes += [(width, first_in, 1, 1), (width,), (width,)]
        width_in = width
    shapes += [(10, 512), (10,)]
    assert len(shapes) == 62
    return shapes


def _median_ms(cupy: Any, function: Callable[[], None], repeats: int, rounds_out: list) -> None:
    """Time ``repeats`` calls with CUDA events; append ms per call to ``rounds_out``."""
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeats):
        function()
    stop.record()
    stop.synchronize()
    rounds_out.append(cupy.cuda.get_elapsed_time(start, stop) / repeats)


def _interleaved(cupy: Any, functions: dict[str, Callable[[], None]], repeats: int,
                 rounds: int) -> dict[str, float]:  # fmt: skip
    for function in functions.values():  # warm up: compile, upload tables, fill caches
        function()
    cupy.cuda.Device().synchronize()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            _median_ms(cupy, function, repeats, times[name])
    return {name: statistics.median(values) for name, values in times.items()}


def kernel_rows(n: int, rounds: int) -> list[tuple[str, str, str, str, str, str]]:
    import cupy

    from padam_core import fused_cuda

    rng = cupy.random.default_rng(0)
    rows = []
    source = rng.standard_normal(n, dtype=cupy.float32)
    target = cupy.empty_like(source)
    stream = cupy.cuda.get_current_stream()

    def copy() -> None:
        target.data.copy_from_device_async(source.data, source.nbytes, stream)

    cases = {}
    for name, partial in [("float32, p = 1/8", 0.125), ("float32, p = 0.3", 0.3)]:
        param = rng.standard_normal(n, dtype=cupy.float32)
        grad = rng.standard_normal(n, dtype=cupy.float32)
        state = [cupy.zeros(n, cupy.float32) for _ in range(3)]
        counter = [0]

        def step(param=param, grad=grad, state=state, counter=counter, partial=partial) -> None:
            counter[0] += 1
            fused_cuda.multi_tensor_step(
                [param], [grad], [state[0]], [state[1]], [state[2]], counter[0], lr=1e-3,
                b1=0.9, b2=0.999, eps=1e-8, partial=partial, weight_decay=0.0,
                decoupled_weight_decay=False, amsgrad=True, maximize=False, variant="reference",
            )  # fmt: skip

        cases[name] = step
    times = _interleaved(cupy, {"copy": copy, **cases}, repeats=5, rounds=rounds)
    copy_bandwidth = 2 * source.nbytes / (times["copy"] * 1e-3) / 1e9
    rows.append((f"device-to-device copy, N = {n:.0e} float32", "—",
                 f"{copy_bandwidth:.0f} GB/s", "", "", ""))  # fmt: skip
    for name in cases:
        bandwidth = 36 * n / (times[name] * 1e-3) / 1e9
        ratio = bandwidth / copy_bandwidth
        verdict = "met" if ratio >= TARGET_BANDWIDTH else "NOT met"
        rows.append((f"CuPy fused kernel, {name}, N = {n:.0e}", "copy bandwidth",
                     f"{bandwidth:.0f} GB/s ({times[name]:.3f} ms)", f"{copy_bandwidth:.0f} GB/s",
                     f"{ratio:.2f}", f">= {TARGET_BANDWIDTH:.2f} ({verdict})"))  # fmt: skip
    return rows


def _optimizer_step(torch: Any, factory: Callable[[list[Any]], Any], base: list[Any],
                    grads: list[Any]) -> Callable[[], None]:  # fmt: skip
    """``step`` of an optimizer made by ``factory`` on fresh copies of ``base`` (grads set)."""
    params = [torch.nn.Parameter(t.clone()) for t in base]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    return factory(params).step


def torch_rows(rounds: int) -> list[tuple[str, str, str, str, str, str]]:
    import cupy
    import torch

    if not torch.cuda.is_available():
        return [("padam_torch on CUDA", "torch fused AMSGrad", "not available",
                 "torch sees no CUDA device", "", "")]  # fmt: skip
    import padam_torch

    rows = []
    for label, shapes in [("ResNet-18's 62 tensors", resnet18_shapes()),
                          ("1000 tensors of 1e4", [(10_000,)] * 1000)]:  # fmt: skip
        torch.manual_seed(0)
        base = [torch.randn(shape, device="cuda") for shape in shapes]
        grads = [torch.randn(shape, device="cuda") for shape in shapes]

        def make(factory: Callable[[list[Any]], Any], base=base, grads=grads) -> Callable[[], None]:
            return _optimizer_step(torch, factory, base, grads)

        functions = {"torch": make(lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True,
                                                                fused=True))}  # fmt: skip
        errors = {}
        for name, extra in [("padam_torch fused=True", {"fused": True}),
                            ("padam_torch default", {})]:  # fmt: skip
            try:
                step = make(lambda p, extra=extra: padam_torch.Padam(p, lr=1e-3, partial=0.125,
                                                                     amsgrad=True, **extra))
                step()
                torch.cuda.synchronize()
                functions[name] = step
            except Exception as error:  # not wired to CUDA yet, or no kernel: say so
                errors[name] = f"{type(error).__name__}: {error}"[:120]
        times = _interleaved(cupy, functions, repeats=20, rounds=rounds)
        for name in ("padam_torch fused=True", "padam_torch default"):
            what = f"{name}, {label}"
            if name in errors:
                rows.append((what, "torch fused AMSGrad", "not available", errors[name], "", ""))
                continue
            ratio = times[name] / times["torch"]
            verdict = "met" if ratio <= TARGET_TORCH else "NOT met"
            rows.append((what, "torch fused AMSGrad", f"{times[name]:.3f} ms",
                         f"{times['torch']:.3f} ms", f"{ratio:.2f}x",
                         f"<= {TARGET_TORCH:.1f}x ({verdict})"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    parser.add_argument("--n", type=float, default=1e8, help="elements for the kernel rows")
    arguments = parser.parse_args(argv)
    rounds = 3 if arguments.quick else 9
    import cupy

    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = properties["name"]
    name = name.decode() if isinstance(name, bytes) else name
    print(f"GPU: {name}, CuPy {cupy.__version__}, CUDA runtime "
          f"{cupy.cuda.runtime.runtimeGetVersion()}")  # fmt: skip
    rows = [("what", "compared with", "ours", "theirs", "ratio", "target")]
    rows += kernel_rows(int(arguments.n), rounds)
    try:
        rows += torch_rows(rounds)
    except Exception as error:  # no torch, a broken install, no CUDA build: the rows say so
        rows.append(("padam_torch on CUDA", "torch fused AMSGrad", "not available",
                     f"{type(error).__name__}: {error}"[:120], "", ""))  # fmt: skip
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
