"""padam_torch's fused path: padam_core's compiled multi-tensor kernel on the tensors' memory.

On CPU the tensors of a group are handed to :func:`padam_core.fused_cpu.multi_tensor_step` as
zero-copy NumPy views (bfloat16 as a uint16 view, float16 as NumPy float16, complex through
``view_as_real``), one call per (dtype, step count) bucket. CUDA tensors go to
:func:`padam_core.fused_cuda.multi_tensor_step` on torch's current stream (imported only when a
CUDA tensor is seen, so the CPU path never imports CuPy). The maths is the kernel's; this module
only maps memory.

Views of tensors the optimizer keeps (parameters and state) are cached between steps (building a
NumPy view costs about a microsecond, which for 1000 small tensors is a tenth of the step);
gradients, usually new tensors every step, are viewed afresh and never kept.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import operator
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim.optimizer import _foreach_supported_types

__all__ = ["cpu_kernel", "cuda_kernel", "fused_padam", "supported_devices", "usable"]

# Real dtypes the kernels take; complex tensors go through view_as_real.
_REAL_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_COMPLEX_DTYPES = (torch.complex128, torch.complex64)
_DTYPES = frozenset(_REAL_DTYPES + _COMPLEX_DTYPES)


@functools.cache
def cpu_kernel() -> Callable[..., None] | None:
    """``padam_core.fused_cpu.multi_tensor_step``, or None where numba is not installed."""
    from padam_core import fused_cpu

    if not fused_cpu.available():
        return None
    return getattr(fused_cpu, "multi_tensor_step", None)


@functools.cache
def cuda_kernel() -> Callable[..., None] | None:
    """``padam_core.fused_cuda.multi_tensor_step``, or None without it, CuPy or a GPU."""
    if not torch.cuda.is_available():
        return None
    try:
        fused_cuda = importlib.import_module("padam_core.fused_cuda")
    except ImportError:
        return None
    available = getattr(fused_cuda, "available", None)
    if available is not None and not available():
        return None
    return getattr(fused_cuda, "multi_tensor_step", None)


def supported_devices() -> list[str]:
    """The device types with a fused kernel here (torch's error message lists them)."""
    devices = ["cpu"] if cpu_kernel() is not None else []
    if cuda_kernel() is not None:
        devices.append("cuda")
    return devices


def usable(params: list[Tensor], grads: list[Tensor], *, capturable: bool) -> bool:
    """Whether ``fused=None`` takes the fused path: CPU tensors of real or complex floating
    dtypes, dense gradients of the parameter's dtype, numba installed; never while dynamo
    traces (it cannot trace a numba call: the foreach path compiles instead) or capturable."""
    if capturable or torch.compiler.is_compiling() or torch.jit.is_scripting():
        return False
    if not params or cpu_kernel() is None:
        return False
    return all(
        type(param) in _foreach_supported_types
        and param.device.type == "cpu"
        and param.dtype in _DTYPES
        and grad.dtype == param.dtype
        and grad.layout == torch.strided
        for param, grad in zip(params, grads, strict=True)
    )


def check_devices(params: list[Tensor]) -> None:
    """torch's ``fused=True`` error for a parameter no fused kernel here can step."""
    devices = supported_devices()
    for param in params:
        if param.device.type not in devices or param.dtype not in _DTYPES:
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: {devices} but {param.dtype} and {param.device.type}"
            )


def host_array(tensor: Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor (bfloat16 as uint16: NumPy has no bfloat16)."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def _device_array(tensor: Tensor) -> Tensor:
    """A CUDA tensor as the GPU kernel takes it (``__cuda_array_interface__``; bfloat16 as
    int16, which that interface can describe)."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16)
    return tensor


def _flat(tensor: Tensor) -> Tensor | None:
    """A 1-D view of ``tensor``'s elements in memory order, or None if it is not dense."""
    if tensor.is_contiguous():
        return tensor.view(-1)
    order = sorted(range(tensor.dim()), key=tensor.stride, reverse=True)
    permuted = tensor.permute(order)
    return permuted.view(-1) if permuted.is_contiguous() else None


class _Copies:
    """Contiguous flat copies of one parameter's tensors when they are not laid out alike;
    :meth:`write_back` copies the results into the originals (not into the gradient)."""

    __slots__ = ("flats", "originals")

    def __init__(self, tensors: list[Tensor]) -> None:
        self.originals = tensors
        self.flats = [t.contiguous().view(-1) for t in tensors]

    def write_back(self) -> None:
        for index, (original, flat) in enumerate(zip(self.originals, self.flats, strict=True)):
            if index != 1 and original.data_ptr() != flat.data_ptr():
                original.copy_(flat.view_as(original))


def _persistent_arrays(
    tensors: list[Tensor], old: dict[int, Any], new: dict[int, Any], convert: Callable[..., Any]
) -> list[Any] | None:
    """Flat arrays of a parameter and its state (``tensors`` without the gradient), from the
    previous step's cache while they are the same tensors on the same memory; None when they
    are not laid out alike (the caller then copies)."""
    param = tensors[0]
    key = id(param)
    entry = old.get(key)
    pointer = param.data_ptr()
    if (
        entry is None
        or entry[1] != pointer
        or entry[2] != param.shape
        or any(kept is not tensor for kept, tensor in zip(entry[0], tensors, strict=False))
        or len(entry[0]) != len(tensors)
    ):
        stride = param.stride()
        flats = [_flat(t) if t.stride() == stride else None for t in tensors]
        if any(flat is None for flat in flats):
            return None
        entry = (tensors, pointer, param.shape, [convert(flat) for flat in flats])
    new[key] = entry
    return entry[3]


# ---- the planned path: one group of contiguous CPU tensors of one dtype, steps in lockstep ----
#
# padam_core.fused_cpu.multi_tensor_step checks every array and builds its table of addresses
# on each call (tens of microseconds per array: more than the maths of a 1e4-element tensor).
# A torch optimizer steps the same tensors every time, so the table is built once, kept in the
# optimizer's cache while the tensors and their memory stay the same, and only the gradients'
# addresses are refreshed per step; the compiled loop is then called directly. This uses
# fused_cpu's internals (the loop, its scalars and configuration tags): where they are missing
# the public multi_tensor_step is used instead, with the same results.

_NUMPY_DTYPES = {
    torch.float64: np.dtype(np.float64),
    torch.float32: np.dtype(np.float32),
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(np.uint16),  # fused_cpu reads 16-bit integer views as bfloat16
}
_dtype_of = operator.attrgetter("dtype")


@functools.cache
def _cpu_internals() -> Any | None:
    """padam_core.fused_cpu when it has the internals the planned path calls, else None."""
    from padam_core import fused_cpu

    names = ("_loop", "_scalars", "_group_key", "_MODE_TAG_LENGTH", "_VARIANT_CODES", "CHUNK")
    if not fused_cpu.available() or not all(hasattr(fused_cpu, name) for name in names):
        return None
    return fused_cpu


class _Plan:
    """The address table of one group's parameters and state, and what validates it."""

    __slots__ = ("addresses", "chunks", "compute", "key", "kind", "raw_like", "shapes")

    def __init__(self, key: tuple[Any, ...], tensors: list[list[Tensor]], core: Any) -> None:
        params = tensors[0]
        self.key = key
        self.shapes = list(map(Tensor.size, params))
        dtype = params[0].dtype
        state = _NUMPY_DTYPES[torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype]
        self.kind, self.compute = core._group_key(np.empty(0, _NUMPY_DTYPES[dtype]), state)
        sizes = np.fromiter(map(Tensor.numel, params), np.int64, len(params))
        self.addresses = np.empty((len(params), 5), dtype=np.int64)
        # (param, grad, m, v, v_hat); without amsgrad v stands in for v_hat (never written).
        moments = tensors[1:] if len(tensors) == 4 else [tensors[1], tensors[2], tensors[2]]
        for column, group in zip((0, 2, 3, 4), [params, *moments], strict=True):
            self.addresses[:, column] = np.fromiter(map(Tensor.data_ptr, group), np.int64)
        per_array = -(-sizes // core.CHUNK)
        owner = np.repeat(np.arange(len(params), dtype=np.int64), per_array)
        first_chunk = np.cumsum(per_array) - per_array
        start = (np.arange(owner.size, dtype=np.int64) - first_chunk[owner]) * core.CHUNK
        self.chunks = np.stack([owner, start, np.minimum(start + core.CHUNK, sizes[owner])], 1)
        self.raw_like = np.empty(0, self.compute if self.kind == 0 else np.uint16)


def _plan_key(tensors: list[list[Tensor]]) -> tuple[Any, ...]:
    """What a plan depends on: the tensors' identities, addresses and strides."""
    flat = list(itertools.chain.from_iterable(tensors))
    return (
        tuple(map(id, flat)),
        tuple(map(Tensor.data_ptr, flat)),
        tuple(map(Tensor.stride, tensors[0])),
    )


@contextlib.contextmanager
def _threads(chunks: int) -> Iterator[None]:
    """numba's threads for one kernel call: torch's intra-op thread count (so
    ``torch.set_num_threads`` governs both), and no more than there are chunks of work: waking
    idle threads for a small step costs more than the step (milliseconds on a busy machine)."""
    import numba

    wanted = max(1, min(torch.get_num_threads(), chunks, numba.config.NUMBA_NUM_THREADS))
    current = numba.get_num_threads()
    if wanted == current:
        yield
        return
    numba.set_num_threads(wanted)
    try:
        yield
    finally:
        numba.set_num_threads(current)


def _planned_step(
    params: list[Tensor],
    grads: list[Tensor],
    state_tensors: list[list[Tensor]],
    state_steps: list[Tensor],
    views: dict[Any, Any],
    hyperparameters: dict[str, Any],
) -> bool:
    """The step through a cached plan; False (nothing done) where the plan does not apply."""
    core = _cpu_internals()
    if core is None:
        return False
    dtypes = set(map(_dtype_of, params))
    if len(dtypes) != 1 or dtypes.pop() not in _NUMPY_DTYPES:
        return False
    steps = set(map(Tensor.item, state_steps))
    if len(steps) != 1:
        return False
    tensors = [params, *state_tensors]
    key = _plan_key(tensors)
    plan = views.get(_Plan)
    if plan is None or plan.key != key:
        everything = itertools.chain.from_iterable(tensors)
        if not all(t.device.type == "cpu" and t.is_contiguous() for t in everything):
            return False
        plan = views[_Plan] = _Plan(key, tensors, core)
    if (
        set(map(_dtype_of, grads)) != {params[0].dtype}
        or not all(map(Tensor.is_contiguous, grads))
        or list(map(Tensor.size, grads)) != plan.shapes
    ):
        return False
    step = int(steps.pop()) + 1
    plan.addresses[:, 1] = np.fromiter(map(Tensor.data_ptr, grads), np.int64, len(grads))
    amsgrad, partial = hyperparameters["amsgrad"], hyperparameters["partial"]
    coupled = (
        hyperparameters["weight_decay"] != 0.0 and not hyperparameters["decoupled_weight_decay"]
    )
    scalars = core._scalars(
        plan.compute, step, **{k: v for k, v in hyperparameters.items() if k != "amsgrad"}
    )
    if plan.chunks.size:
        serial = getattr(core._loop, "multi_tensor_kernel_serial", None)
        kernel = core._loop.multi_tensor_kernel
        if serial is not None and min(len(plan.chunks), torch.get_num_threads()) == 1:
            kernel = serial  # no parallel region at all for one chunk or one thread
        # The serial kernel needs no thread count (asking starts numba's threading layer).
        threads = contextlib.nullcontext() if kernel is serial else _threads(len(plan.chunks))
        with threads:
            kernel(
                plan.addresses, plan.chunks, scalars, plan.raw_like,
                (0,) * core._VARIANT_CODES[hyperparameters["variant"]],
                (0,) * core._MODE_TAG_LENGTH[core.power_mode(partial)],
                (0,) * (int(amsgrad) + 2 * int(coupled)),
                (0,) * plan.kind,
            )  # fmt: skip
    torch._foreach_add_(state_steps, 1.0)
    return True


def fused_padam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    amsgrad: bool,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    partial: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    variant: str,
    capturable: bool,
    differentiable: bool,
    views: dict[int, Any] | None = None,
) -> None:
    """One fused step over ``params``; ``views`` (kept by the optimizer) caches NumPy views.

    Everything that can fail (devices, dtypes, kernels) is checked and every view is built
    before the first kernel call; the step counts are incremented after the last one.
    """
    if not params:
        return
    if differentiable:
        raise RuntimeError("Padam with fused=True does not support differentiable=True")
    hyperparameters = {
        "lr": float(lr),
        "b1": float(beta1),
        "b2": float(beta2),
        "eps": float(eps),
        "partial": float(partial),
        "weight_decay": float(weight_decay),
        "decoupled_weight_decay": bool(decoupled_weight_decay),
        "amsgrad": bool(amsgrad),
        "maximize": bool(maximize),
        "variant": variant,
    }
    if views is not None:
        state_tensors = [exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if amsgrad else [])
        if _planned_step(params, grads, state_tensors, state_steps, views, hyperparameters):
            return
        views.pop(_Plan, None)
    old = views if views is not None else {}
    new: dict[Any, Any] = {}
    kernels = {"cpu": cpu_kernel()}
    # (device type, dtype, step) -> five lists of arrays; views written back after the kernel.
    buckets: dict[tuple[str, torch.dtype, int], list[list[Any]]] = {}
    copied: list[_Copies] = []
    steps = [int(step.item()) for step in state_steps]
    for index, param in enumerate(params):
        device = param.device.type
        if device not in kernels:
            kernels[device] = cuda_kernel() if device == "cuda" else None
        if kernels[device] is None or param.dtype not in _DTYPES:
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: {supported_devices()} but {param.dtype} and {device}"
            )
        if capturable and device != "cpu":
            raise RuntimeError("Padam with fused=True does not support capturable=True on CUDA")
        grad = grads[index]
        if grad.dtype != param.dtype or grad.layout != torch.strided:
            raise RuntimeError(
                f"fused=True needs dense gradients of the parameter's dtype {param.dtype}, "
                f"got {grad.dtype} ({grad.layout})"
            )
        if param.numel() == 0:
            continue
        convert = host_array if device == "cpu" else _device_array
        kept = [param, exp_avgs[index], exp_avg_sqs[index]]
        if amsgrad:
            kept.append(max_exp_avg_sqs[index])
        if param.is_complex():  # as torch: real and imaginary parts are separate parameters
            kept = [torch.view_as_real(t) for t in kept]
            grad = torch.view_as_real(grad)
        arrays = _persistent_arrays(kept, old, new, convert)
        flat_grad = _flat(grad) if arrays is not None and grad.stride() == param.stride() else None
        if flat_grad is not None:
            arrays = [arrays[0], convert(flat_grad), *arrays[1:]]
        else:  # laid out differently: contiguous copies, written back after the kernel
            layout = _Copies([kept[0], grad, *kept[1:]])
            copied.append(layout)
            arrays = [convert(flat) for flat in layout.flats]
        key = (device, param.dtype, steps[index])
        lists = buckets.get(key)
        if lists is None:
            lists = buckets[key] = [[] for _ in range(5)]
        for target, array in zip(lists, arrays, strict=False):
            target.append(array)

    for (device, _dtype, step), lists in buckets.items():
        if device == "cuda":
            kernels[device](
                lists[0], lists[1], lists[2], lists[3], lists[4] if amsgrad else None, step + 1,
                **hyperparameters, stream=torch.cuda.current_stream().cuda_stream,
            )  # fmt: skip
            continue
        chunks = sum(-(-array.size // (1 << 15)) for array in lists[0])
        with _threads(chunks):
            kernels[device](
                lists[0], lists[1], lists[2], lists[3], lists[4] if amsgrad else None, step + 1,
                **hyperparameters,
            )  # fmt: skip
    for layout in copied:
        layout.write_back()
    torch._foreach_add_(state_steps, 1.0)
    if views is not None:
        views.clear()
        views.update(new)
