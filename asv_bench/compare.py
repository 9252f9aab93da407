"""Print issue 9's Targets table: each Padam path beside its yardstick, ratios from one run.

Ratios measured in one run, interleaved, mean something on a shared machine; absolute times do
not. Every row times its two cases in alternation (``--repeat`` rounds, the order flipped every
round) and reports the ratio of the medians.

    PYTHONPATH=.:adapters python asv_bench/compare.py            # the whole table
    PYTHONPATH=.:adapters python asv_bench/compare.py --quick    # fewer repeats, smaller sizes
    PYTHONPATH=.:adapters python asv_bench/compare.py --rows torch,core --repeat 31
    PYTHONPATH=.:adapters python asv_bench/compare.py --kernel   # the old per-variant table

Rows: ``torch`` (padam_torch default step vs torch fused AMSGrad), ``core`` (padam_core's fused
kernel vs a compiled copy loop moving the same 36 B/element), ``power`` (p = 0.3 vs p = 1/8),
``jax`` (inject_hyperparams and plain padam_jax vs optax.amsgrad, jit), ``keras`` (one
subprocess per backend, ``asv_bench/keras_step_cost.py``), ``cold`` (first fused step in a
fresh process), ``memory`` (extra resident memory of one fused step, N = 1e7), ``schedule``
(a scheduled p vs a constant one) and ``guard`` (``skip_nonfinite=True`` vs off), issue 11's
costs, on padam_torch's default step and padam_jax under jit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BYTES_PER_ELEMENT = 36  # float32: read theta, g, m, v, v_hat; write theta, m, v, v_hat
HYPER = {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "partial": 0.125}
ROWS = ("torch", "core", "power", "jax", "keras", "cold", "memory", "schedule", "guard")

from benchmarks.shapes import RESNET18_SHAPES  # noqa: E402  (asv_bench/ is sys.path[0])


def interleaved(cases: dict[str, Callable[[], Any]], repeat: int, number: int = 1) -> dict:
    """Median seconds per call of each case, timed in alternation (order flipped each round)."""
    for case in cases.values():  # warm up (compilation, first-touch of state)
        case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for _ in range(repeat):
        order.reverse()
        for name in order:
            times[name].append(timeit.timeit(cases[name], number=number) / number)
    return {name: statistics.median(values) for name, values in times.items()}


def row(what: str, compared: str, ours: float, theirs: float, target: str, unit: str = "ms"):
    scale = 1e3 if unit == "ms" else 1.0
    ratio = ours / theirs if theirs else float("nan")
    print(
        f"| {what} | {compared} | {ours * scale:.3g} / {theirs * scale:.3g} {unit} "
        f"| {ratio:.2f}x | {target} |",
        flush=True,
    )


# --------------------------------------------------------------------------------------- torch


def _torch_tensors(shapes: list[tuple[int, ...]], seed: int = 0) -> list[Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        param = torch.randn(shape, generator=generator).requires_grad_()
        param.grad = torch.randn(shape, generator=generator)
        params.append(param)
    return params


def torch_rows(args: argparse.Namespace) -> None:
    import torch

    import padam_torch

    cases = {
        "one 1e6 tensor": [(10**6,)],
        "one 1e7 tensor": [(10**7,)],
        "ResNet-18's 62 tensors (11.7M)": RESNET18_SHAPES,
        "1000 tensors of 1e4": [(10**4,)] * 1000,
    }
    if args.quick:
        cases.pop("one 1e7 tensor")
    for name, shapes in cases.items():
        padam = padam_torch.Padam(_torch_tensors(shapes), lr=1e-3)
        adam = torch.optim.Adam(_torch_tensors(shapes), lr=1e-3, amsgrad=True, fused=True)
        medians = interleaved({"padam": padam.step, "adam": adam.step}, args.repeat)
        row(
            f"padam_torch default step, {name}", "torch Adam(amsgrad, fused)",
            medians["padam"], medians["adam"], "<= 1.0x (aim 0.9x)",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------- core


def _copy_loop() -> Callable[..., None]:
    """A numba loop reading 5 float32 arrays and writing 4 (36 B/element), no maths."""
    try:
        from yardsticks import copy_loop  # asv_bench/yardsticks.py (asv_bench/ is sys.path[0])

        return copy_loop
    except ImportError:
        pass
    import numba

    @numba.njit(parallel=True)
    def copy_loop(theta, g, m, v, v_hat):  # a permutation of the loads: nothing to fold away
        for i in numba.prange(theta.size):
            a, b, c, d, e = theta[i], g[i], m[i], v[i], v_hat[i]
            theta[i], m[i], v[i], v_hat[i] = b, a, e, d + c * 0

    return copy_loop


def _core_arrays(size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=size).astype(np.float32) for _ in range(5)]
    arrays[3], arrays[4] = np.abs(arrays[3]), np.abs(arrays[4]) * 1.5
    return arrays


def core_rows(args: argparse.Namespace) -> None:
    from padam_core import fused_cpu

    if not hasattr(fused_cpu, "multi_tensor_step"):
        print("| padam_core fused step | copy loop | not measured (no multi_tensor_step) |||")
        return
    copy_loop = _copy_loop()
    for size in [10**6] + ([] if args.quick else [10**7]):
        ours, loop = _core_arrays(size), _core_arrays(size)

        def fused(a=ours):
            fused_cpu.multi_tensor_step([a[0]], [a[1]], [a[2]], [a[3]], [a[4]], 10, **STEP)

        medians = interleaved({"fused": fused, "copy": lambda a=loop: copy_loop(*a)}, args.repeat)
        row(
            f"padam_core fused step, N = {size:.0e}", "numba copy loop, 36 B/element",
            medians["fused"], medians["copy"], "<= 1.15x",
        )  # fmt: skip


STEP = {
    **HYPER,
    "weight_decay": 0.0,
    "decoupled_weight_decay": False,
    "amsgrad": True,
    "maximize": False,
    "variant": "reference",
}


def power_rows(args: argparse.Namespace) -> None:
    import padam_torch

    shapes = [(10**6,)]
    general = padam_torch.Padam(_torch_tensors(shapes), lr=1e-3, partial=0.3)
    chain = padam_torch.Padam(_torch_tensors(shapes), lr=1e-3, partial=0.125)
    medians = interleaved({"general": general.step, "chain": chain.step}, args.repeat)
    row(
        "p = 0.3, padam_torch default step, 1e6", "p = 1/8, same path",
        medians["general"], medians["chain"], "<= 1.5x",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- jax


def jax_rows(args: argparse.Namespace) -> None:
    import optax

    import padam_jax

    pairs = {
        "inject_hyperparams(padam)": (
            optax.inject_hyperparams(padam_jax.padam)(learning_rate=1e-3),
            optax.inject_hyperparams(optax.amsgrad)(learning_rate=1e-3),
            "inject_hyperparams(optax.amsgrad)", "<= 1.1x",
        ),
        "padam_jax.padam, jit": (
            padam_jax.padam(learning_rate=1e-3), optax.amsgrad(learning_rate=1e-3),
            "optax.amsgrad, jit", "<= 1.0x",
        ),
    }  # fmt: skip
    for name, (ours, theirs, compared, target) in pairs.items():
        medians = interleaved({"ours": _jax_runner(ours), "theirs": _jax_runner(theirs)},
                              args.repeat)  # fmt: skip
        row(f"{name}, 1e6", compared, medians["ours"], medians["theirs"], target)


def _jax_runner(optimizer: Any, size: int = 10**6) -> Callable[[], Any]:
    """One jitted step of ``optimizer`` on a 1e6 + 1000 parameter tree, blocking."""
    import jax
    import optax

    key = jax.random.PRNGKey(0)
    params = {"w": jax.random.normal(key, (size,)), "b": jax.random.normal(key, (1000,))}
    grads = jax.tree.map(lambda p: p * 0.01 + 0.001, params)
    state = [optimizer.init(params), params]

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def run():
        state[1], state[0] = step(state[1], state[0])
        jax.block_until_ready(state[1])

    return run


# ------------------------------------------------------------------------- issue 11's features


def _feature_rows(args: argparse.Namespace, name: str, ours: dict, baseline: dict) -> None:
    """padam_torch (ResNet-18's tensors) and padam_jax (jit, 1e6) with ``ours`` vs ``baseline``
    keyword arguments."""
    import padam_jax
    import padam_torch

    torch_ours = padam_torch.Padam(_torch_tensors(RESNET18_SHAPES), lr=1e-3, **ours)
    torch_base = padam_torch.Padam(_torch_tensors(RESNET18_SHAPES), lr=1e-3, **baseline)
    medians = interleaved({"ours": torch_ours.step, "base": torch_base.step}, args.repeat)
    row(f"{name}, padam_torch default step, ResNet-18's tensors", "the same without it",
        medians["ours"], medians["base"], "stated")  # fmt: skip
    jax_ours = _jax_runner(padam_jax.padam(learning_rate=1e-3, **ours))
    jax_base = _jax_runner(padam_jax.padam(learning_rate=1e-3, **baseline))
    medians = interleaved({"ours": jax_ours, "base": jax_base}, args.repeat)
    row(f"{name}, padam_jax.padam, jit, 1e6", "the same without it",
        medians["ours"], medians["base"], "stated")  # fmt: skip


def schedule_rows(args: argparse.Namespace) -> None:
    from padam_core import schedules

    # A ramp still moving (step ~10-50 of 1e6), so neither side sits on a square-root plateau
    # while p changes: torch evaluates it on the host, JAX on the traced count.
    _feature_rows(args, "partial = linear(0.5, 0.125, 1e6)",
                  {"partial": schedules.linear(0.5, 0.125, steps=10**6)},
                  {"partial": 0.3})  # fmt: skip


def guard_rows(args: argparse.Namespace) -> None:
    _feature_rows(args, "skip_nonfinite=True", {"skip_nonfinite": True}, {})


# --------------------------------------------------------------------------------------- keras


def keras_rows(args: argparse.Namespace) -> None:
    script = ROOT / "asv_bench" / "keras_step_cost.py"
    if not script.exists():
        print("| padam_keras optimizer part | keras Adam(amsgrad) | not measured "
              "(asv_bench/keras_step_cost.py is missing) | | <= 1.0x |")  # fmt: skip
        return
    extra = ["--repeats", "5", "--steps", "10"] if args.quick else []
    if args.threads:
        extra += ["--threads", str(args.threads)]
    for backend in ("tensorflow", "jax", "torch"):
        command = [sys.executable, str(script), "--backend", backend, *extra]
        result = subprocess.run(command, capture_output=True, text=True, env=_env(), check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            print(f"| padam_keras optimizer part, {backend} | keras Adam(amsgrad) | failed: "
                  f"{result.stderr.strip().splitlines()[-1:]} | | <= 1.0x |")  # fmt: skip
            continue
        record = json.loads(lines[-1])
        row(
            f"padam_keras optimizer part of a fit step, {backend}", "keras Adam(amsgrad=True)",
            record["padam_optimizer_ms"] / 1e3, record["adam_optimizer_ms"] / 1e3, "<= 1.0x",
        )  # fmt: skip


# ---------------------------------------------------------------------------- cold and memory


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _python(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=_env(), check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


COLD = """
    import json, time
    import torch
    torch.optim.Adam([torch.zeros(1)])  # torch's own first-optimizer cost (torch._dynamo)
    param = torch.randn(1000, requires_grad=True)
    param.grad = torch.randn(1000)
    begin = time.perf_counter()
    import padam_torch
    optimizer = padam_torch.Padam([param], fused=True)
    start = time.perf_counter()
    optimizer.step()
    end = time.perf_counter()
    print(json.dumps({"seconds": end - start, "with_setup": end - begin}))
"""


def cold_rows(args: argparse.Namespace) -> None:
    first = _python(COLD)
    later = [_python(COLD) for _ in range(1 if args.quick else 3)]
    step = statistics.median(run["seconds"] for run in later)
    setup = statistics.median(run["with_setup"] for run in later)
    print(
        f"| first fused step in a fresh process (padam_torch, fused=True) | the first process: "
        f"{first['seconds']:.3g} s | {step:.3g} s | | <= 0.3 s |"
    )
    print(
        f"| import padam_torch + Padam(...) + first fused step, after import torch | the first "
        f"process: {first['with_setup']:.3g} s | {setup:.3g} s | | |"
    )


MEMORY = """
    import json
    import torch
    import padam_torch

    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    size = {size}
    param = torch.randn(size, requires_grad=True)
    param.grad = torch.randn(size)
    optimizer = {optimizer}
    optimizer.step()  # state created, code compiled
    before = kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the high-water mark to the current RSS
    optimizer.step()
    extra = (kib("VmHWM") - before) * 1024
    print(json.dumps({{"extra": extra, "state": 3 * size * 4}}))
"""


def memory_rows(args: argparse.Namespace) -> None:
    size = 10**7
    ours = _python(MEMORY.format(size=size, optimizer="padam_torch.Padam([param])"))
    adam = "torch.optim.Adam([param], amsgrad=True, fused=True)"
    theirs = _python(MEMORY.format(size=size, optimizer=adam))
    print(
        f"| extra memory of a fused step, N = 1e7 (peak RSS - RSS) | torch fused AMSGrad: "
        f"{theirs['extra'] / 2**20:.2f} MiB | {ours['extra'] / 2**20:.2f} MiB "
        f"({100 * ours['extra'] / ours['state']:.2f}% of the state) | | < 1% of the state |"
    )


# ------------------------------------------------------------------------------ kernel (old)


def kernel_table(args: argparse.Namespace) -> None:
    """The pure NumPy kernel and the single-array fused path, per variant and power."""
    import padam_core
    from padam_core import fused_cpu

    size = 2**20
    arrays = _core_arrays(size)
    print(f"{size} float32 elements, 36 B moved per element")
    print(f"{'variant':<10} {'partial':>7} {'pure ms':>8} {'fused ms':>9} {'pure/fused':>10}")
    for variant in padam_core.VARIANTS:
        for partial in (0.125, 0.5, 0.3):
            hyper = {"variant": variant, "partial": partial}
            copies = [a.copy() for a in arrays]

            def run(h=hyper, c=copies):
                fused_cpu.padam_step_inplace(*c, 10, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, **h)

            medians = interleaved(
                {"pure": lambda h=hyper: padam_core.padam_step(*arrays, 10, **h), "fused": run},
                args.repeat,
            )
            pure, fused = medians["pure"], medians["fused"]
            print(f"{variant:<10} {partial:>7} {pure * 1e3:>8.2f} {fused * 1e3:>9.2f} "
                  f"{pure / fused:>10.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 1e7 rows")
    parser.add_argument("--repeat", type=int, default=None, help="interleaved rounds per row")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {ROWS}")
    parser.add_argument("--kernel", action="store_true", help="the per-variant kernel table")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch and numba threads, the same for both sides of a row (0: their defaults; "
        "1 by default: on a shared machine spinning worker threads make every ratio noise)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)  # also for the subprocesses
        import torch

        torch.set_num_threads(args.threads)
    if args.repeat is None:
        args.repeat = 7 if args.quick else 21
    if args.kernel:
        kernel_table(args)
        return
    import torch

    print(
        f"padam issue 9 targets: float32, p = 1/8 unless stated, medians of {args.repeat} "
        f"interleaved repeats; {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); {time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print("| what | compared with | ours / theirs | ratio | target |")
    print("|---|---|---|---|---|")
    sections = {
        "torch": torch_rows, "core": core_rows, "power": power_rows, "jax": jax_rows,
        "keras": keras_rows, "cold": cold_rows, "memory": memory_rows,
        "schedule": schedule_rows, "guard": guard_rows,
    }  # fmt: skip
    for name in args.rows.split(","):
        sections[name.strip()](args)


if __name__ == "__main__":
    main()
