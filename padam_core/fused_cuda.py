"""A fused multi-tensor Padam step on CUDA, launched through CuPy (apex multi_tensor_apply style).

:func:`multi_tensor_step` updates every tensor of a parameter set in place, one kernel launch per
parameter dtype: the host writes one table of pointers and sizes (and a list of chunks of at
most :data:`CHUNK_SIZE` elements), each CUDA block takes chunks (grid-stride), its threads stride
over the chunk's elements. Each element is read once (theta, g, m, v, v_hat) and written once
(theta, m, v, v_hat): 36 bytes per float32 element with amsgrad.

The kernel source is ``padam_core/cuda/padam_multi_tensor.cu``, compiled on first use by CuPy's
NVRTC (CuPy keeps the binary in its on-disk kernel cache, so later processes do not compile).
Its arithmetic is :func:`padam_core.padam_step`'s, operation for operation and in the same order,
in the compute dtype (float64 for float64 parameters, float32 otherwise; float16/bfloat16
parameters keep float32 state and are rounded once, to nearest even). Scalars (bias corrections
``-expm1(t log b)``, step sizes, ``1 - b``) are computed once per call on the host in double
precision and rounded once to the compute dtype, exactly as NumPy rounds the Python floats the
pure kernel uses. Gradient and second-moment saturation (COMMON decision 3) is in the kernel.
Powers: ``x^(2p)`` by square-root chains for p in {1/2, 1/4, 1/8, 1/16}, exactly 1 for p = 0,
``exp2(2p log2 x)`` (0 and inf exact) for other p. The kernel is compiled with ``--fmad=false``:
NVRTC would otherwise fuse ``a*b + c`` into one rounding where NumPy rounds twice.

How it is tested without a GPU (``tests/core/test_fused_cuda.py``): the ``.cu`` file is portable
C++ (every CUDA-specific name is behind a ``PADAM_*`` macro), and the test compiles the *same
file* with the system C++ compiler and a small header that emulates ``blockIdx``/``threadIdx``
loops (``tests/core/cuda_host_shim.h``), then drives it through ctypes with the tables this
module builds (:func:`_plan` is shared by both). The alternative, writing the kernel for numba's
CUDA target and running numba's CUDA simulator, would test Python code interpreted by numba,
not the source CuPy compiles: the table walk, the 16-bit conversions and the C operator
semantics would go untested. Not covered on the CPU: NVRTC's code generation itself and CuPy's
launch (the GPU tests in the same file check those where a GPU is present), and the last bits
of CUDA's ``exp2f``/``log2f`` for general p (compared within a tolerance, as the numba path).

Inputs: CuPy arrays, torch CUDA tensors (read through ``data_ptr()``, so bfloat16 and tensors
that require grad work, zero copy), or any object with ``__cuda_array_interface__``. All arrays
must be C-contiguous, on one device. bfloat16 parameters may also come as int16/uint16 arrays of
their bits (as CuPy and the array interface, which have no bfloat16, carry them). ``stream``
is a CUDA stream handle (int, e.g. ``torch.cuda.current_stream().cuda_stream``), a CuPy stream,
or an object with ``.cuda_stream``; None means CuPy's current stream. The call is
asynchronous on that stream, as any CUDA launch; the caller orders it after the work that
produced the arrays (the ``stream`` entry of ``__cuda_array_interface__`` is not waited on).

CuPy is imported lazily: this module imports without it, and :func:`available` says whether a
GPU can be used.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from importlib import resources
from typing import Any, NamedTuple

import numpy as np

from padam_core.hyperparameters import VARIANTS
from padam_core.kernel import SQRT_CHAIN_LENGTHS, bias_correction

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "NVRTC_OPTIONS",
    "available",
    "kernel_source",
    "multi_tensor_step",
]

CHUNK_SIZE = 65536  # elements per chunk (one block's share of a tensor at a time)
BLOCK_SIZE = 512  # threads per block
_MAX_GRID = 65535  # blocks per launch; more chunks are taken grid-stride

# config bits, as in padam_multi_tensor.cu
_VARIANT_CODES = {"reference": 0, "torch": 1, "optax": 2}
_AMSGRAD, _MAXIMIZE, _COUPLED_L2, _DECOUPLED = 4, 8, 16, 32
_POWER_SHIFT = 8
_POWER_ONE, _POWER_GENERAL = 4, 5

_PARAM_DTYPES = ("float32", "float64", "float16", "bfloat16")
# bfloat16 bits carried as 16-bit integers (NumPy, CuPy and __cuda_array_interface__ have no
# bfloat16; padam_torch's fused path passes ``tensor.view(torch.int16)``): an integer is never a
# parameter, so params/grads of these dtypes are read as bfloat16.
_BFLOAT16_CARRIERS = ("int16", "uint16")
_TYPESTRS = {"<f2": "float16", "<f4": "float32", "<f8": "float64", "<i2": "int16", "<u2": "uint16"}


def _cupy() -> Any:
    import cupy  # lazily: padam_core must import without CuPy

    return cupy


@functools.cache
def available() -> bool:
    """Whether CuPy is installed and sees at least one CUDA device."""
    try:
        cupy = _cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


def kernel_source() -> str:
    """The CUDA source of the kernel (shipped as package data)."""
    return (resources.files("padam_core") / "cuda" / "padam_multi_tensor.cu").read_text()


class _Buffer(NamedTuple):
    """What the kernel needs to know about one array: where it is and how it is laid out.

    A plain tuple in this field order works too (the torch fast path builds those).
    """

    ptr: int
    size: int
    shape: tuple[int, ...]
    dtype: Any  # a name ("float32", ...) or a dtype object whose str() ends in the name
    device: int | None  # CUDA device ordinal; None or negative: not on a CUDA device
    contiguous: bool


_PTR, _SIZE, _SHAPE, _DTYPE, _DEVICE, _CONTIGUOUS = range(6)


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for extent, stride in zip(reversed(shape), reversed(strides), strict=True):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True


def _buffer(array: Any, name: str) -> _Buffer:
    """Read pointer, size, dtype and device of a CuPy array, a torch tensor or any CAI object."""
    if callable(getattr(array, "data_ptr", None)) and hasattr(array, "is_contiguous"):
        # torch: its __cuda_array_interface__ refuses bfloat16 and tensors that require grad.
        device = array.device
        return _Buffer(
            ptr=int(array.data_ptr()),
            size=int(array.numel()),
            shape=tuple(array.shape),
            dtype=array.dtype,
            device=device.index if device.type == "cuda" else None,
            contiguous=bool(array.is_contiguous()),
        )
    if type(array).__module__.startswith("cupy"):
        return _Buffer(
            ptr=int(array.data.ptr),
            size=int(array.size),
            shape=tuple(array.shape),
            dtype=array.dtype,
            device=int(array.device.id),
            contiguous=bool(array.flags.c_contiguous),
        )
    interface = getattr(array, "__cuda_array_interface__", None)
    if interface is None:
        raise TypeError(
            f"{name} must be CuPy arrays, torch CUDA tensors or objects with "
            f"__cuda_array_interface__, got {type(array).__name__}"
        )
    shape = tuple(int(n) for n in interface["shape"])
    dtype = _TYPESTRS.get(interface["typestr"], interface["typestr"])
    ptr = int(interface["data"][0])
    itemsize = int(interface["typestr"][2:]) if interface["typestr"][2:].isdigit() else 1
    device = None
    if ptr:
        device = int(_cupy().cuda.runtime.pointerGetAttributes(ptr).device)
    return _Buffer(
        ptr=ptr,
        size=math.prod(shape),
        shape=shape,
        dtype=dtype,
        device=device,
        contiguous=_c_contiguous(shape, interface.get("strides"), itemsize),
    )


def _buffers(arrays: list[Any], name: str) -> list[Any]:
    """:func:`_buffer` of each array; for torch tensors as plain tuples, in one comprehension.

    A step over 1000 tensors reads 5000 arrays: at ~0.3 us for a tuple of five attribute reads
    against several us for a general :func:`_buffer`, this keeps the host side near a
    millisecond. CPU tensors give device -1 (get_device), which the checks refuse.
    """
    try:
        return [(a.data_ptr(), a.numel(), a.shape, a.dtype, a.get_device(), a.is_contiguous())
                for a in arrays]  # fmt: skip
    except (AttributeError, TypeError):  # not all torch tensors
        return [_buffer(a, name) for a in arrays]


@functools.cache
def _dtype_name(dtype: Any) -> str:
    """"float32" for "float32", numpy.float32, torch.float32, ...; bfloat16 carriers mapped."""
    name = str(dtype).removeprefix("torch.")
    return "bfloat16" if name in _BFLOAT16_CARRIERS else name


def _dtype_names(buffers: list[Any]) -> list[str]:
    dtypes = [b[_DTYPE] for b in buffers]
    names = {dtype: _dtype_name(dtype) for dtype in set(dtypes)}
    return [names[dtype] for dtype in dtypes]


@dataclasses.dataclass(frozen=True)
class _Launch:
    """One kernel launch: every tensor of one parameter dtype."""

    kind: str  # the parameter dtype: names the kernel padam_multi_tensor_<kind>
    table: np.ndarray  # int64: 6 per tensor (5 pointers, size), then 2 per chunk (tensor, start)
    n_tensors: int
    n_chunks: int
    chunk_size: int
    config: int
    scalars: tuple[Any, ...]  # NumPy scalars of the compute dtype, in the kernel's order


def _power_mode(partial: float) -> int:
    if partial == 0.0:
        return _POWER_ONE
    return SQRT_CHAIN_LENGTHS.get(partial, _POWER_GENERAL)


def _scalars(step: int, compute: type, *, lr: float, b1: float, b2: float, eps: float,
             partial: float, weight_decay: float, variant: str) -> tuple[Any, ...]:  # fmt: skip
    """The kernel's scalars, in double and rounded once, as padam_step's Python floats are."""
    bc1 = bias_correction(b1, step, xp=None, dtype=None)
    bc2 = bias_correction(b2, step, xp=None, dtype=None)
    step_size = lr * math.sqrt(bc2) / bc1 if variant == "reference" else lr / bc1
    values = (
        b1, 1.0 - b1, b2, 1.0 - b2, eps, weight_decay, 1.0 - lr * weight_decay,
        step_size, bc1, bc2, math.sqrt(bc2), lr, 2.0 * partial, 1.0 + eps,
    )  # fmt: skip
    return tuple(compute(value) for value in values)


def _first_mismatch(name: str, actual: list[Any], expected: list[Any], what: str) -> None:
    """Raise for the first index where ``actual`` differs from ``expected`` (they differ)."""
    for k, (a, b) in enumerate(zip(actual, expected, strict=True)):
        if a != b:
            error = TypeError if what == "dtype" else ValueError
            raise error(f"{name}[{k}] has {what} {a}, expected {b}")


def _plan(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any] | None,
    step: int,
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    partial: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    variant: str,
    chunk_size: int = CHUNK_SIZE,
) -> list[_Launch]:
    """Check every buffer and build the launches; raises before anything is written.

    The checks are comparisons of whole lists (one pass each in C), so that 1000 tensors cost
    about as much as a handful; only a failing check looks for the index to name.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Invalid variant value: {variant!r} (expected one of {VARIANTS})")
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"Invalid step value: {step!r} (expected an int >= 1)")
    n = len(params)
    lists = {"params": params, "grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sqs (the running maxima), got None")
        lists["max_exp_avg_sqs"] = max_exp_avg_sqs
    for name, buffers in lists.items():
        if len(buffers) != n:
            raise ValueError(f"{name} has {len(buffers)} arrays for {n} params")

    param_dtypes = _dtype_names(params)
    if not set(param_dtypes) <= set(_PARAM_DTYPES):
        for k, dtype in enumerate(param_dtypes):
            if dtype not in _PARAM_DTYPES:
                raise TypeError(f"params[{k}] has dtype {dtype} (expected one of "
                                f"{', '.join(_PARAM_DTYPES)})")  # fmt: skip
    state_dtypes = ["float64" if d == "float64" else "float32" for d in param_dtypes]
    shapes = [b[_SHAPE] for b in params]  # torch.Size and tuples compare equal
    devices: set[int | None] = set()
    for name, buffers in lists.items():
        expected = param_dtypes if name in ("params", "grads") else state_dtypes
        dtypes = param_dtypes if buffers is params else _dtype_names(buffers)
        if dtypes != expected:
            _first_mismatch(name, dtypes, expected, "dtype")
        if name != "params":
            other_shapes = [b[_SHAPE] for b in buffers]
            if other_shapes != shapes:
                _first_mismatch(name, other_shapes, shapes, "shape")
        if not all(b[_CONTIGUOUS] for b in buffers):
            k = next(k for k, b in enumerate(buffers) if not b[_CONTIGUOUS])
            raise ValueError(f"{name}[{k}] is not contiguous")
        devices.update(b[_DEVICE] for b in buffers if b[_SIZE])
    if any(device is None or device < 0 for device in devices):
        for name, buffers in lists.items():
            for k, b in enumerate(buffers):
                if b[_SIZE] and (b[_DEVICE] is None or b[_DEVICE] < 0):
                    raise TypeError(f"{name}[{k}] is not on a CUDA device")
    if len(devices) > 1:
        found = sorted(d for d in devices if d is not None)  # no None is left after the check
        raise ValueError(f"all arrays must be on one CUDA device, got devices {found}")

    weight_decay = float(weight_decay)
    config = _VARIANT_CODES[variant] | (_power_mode(float(partial)) << _POWER_SHIFT)
    if amsgrad:
        config |= _AMSGRAD
    if maximize:
        config |= _MAXIMIZE
    if weight_decay != 0.0:  # padam_step skips weight decay entirely at 0
        config |= _DECOUPLED if decoupled_weight_decay else _COUPLED_L2

    groups: dict[str, list[int]] = {}
    for k, (dtype, buffer) in enumerate(zip(param_dtypes, params, strict=True)):
        if buffer[_SIZE]:  # empty tensors need no work (and may have no address)
            groups.setdefault(dtype, []).append(k)
    columns = [np.array([b[_PTR] for b in lists[name]], dtype=np.uint64)
               for name in ("params", "grads", "exp_avgs", "exp_avg_sqs")]  # fmt: skip
    columns.append(np.array([b[_PTR] for b in lists["max_exp_avg_sqs"]], dtype=np.uint64)
                   if amsgrad else np.zeros(n, dtype=np.uint64))  # fmt: skip
    columns.append(np.array([b[_SIZE] for b in params], dtype=np.uint64))
    everything = np.stack(columns, axis=1)
    launches = []
    for kind, indices in groups.items():
        pointers = everything[indices]
        sizes = pointers[:, 5].astype(np.int64)
        counts = -(-sizes // chunk_size)
        tensor_of_chunk = np.repeat(np.arange(len(indices), dtype=np.int64), counts)
        first_chunk = np.repeat(np.cumsum(counts) - counts, counts)
        starts = (np.arange(len(tensor_of_chunk), dtype=np.int64) - first_chunk) * chunk_size
        chunks = np.stack([tensor_of_chunk, starts], axis=1)
        table = np.concatenate([pointers.view(np.int64).reshape(-1), chunks.reshape(-1)])
        scalars = _scalars(
            int(step), np.float64 if kind == "float64" else np.float32, lr=float(lr),
            b1=float(b1), b2=float(b2), eps=float(eps), partial=float(partial),
            weight_decay=weight_decay, variant=variant,
        )  # fmt: skip
        launch = _Launch(kind, np.ascontiguousarray(table), len(indices), len(tensor_of_chunk),
                         chunk_size, config, scalars)  # fmt: skip
        launches.append(launch)
    return launches


# NVRTC options: no FMA contraction (NumPy rounds a*b and then +c); IEEE division and square
# root are NVRTC's defaults (no --use_fast_math).
NVRTC_OPTIONS = ("--fmad=false",)


@functools.cache
def _module(device: int) -> Any:
    cupy = _cupy()
    with cupy.cuda.Device(device):
        return cupy.RawModule(code=kernel_source(), options=NVRTC_OPTIONS)


@functools.cache
def _kernel(device: int, kind: str) -> Any:
    with _cupy().cuda.Device(device):
        return _module(device).get_function(f"padam_multi_tensor_{kind}")


def _stream(cupy: Any, stream: Any) -> Any:
    if stream is None:
        return cupy.cuda.get_current_stream()
    if isinstance(stream, cupy.cuda.Stream | cupy.cuda.ExternalStream):
        return stream
    handle = getattr(stream, "cuda_stream", stream)
    if isinstance(handle, bool) or not isinstance(handle, int):
        raise TypeError(f"stream must be a CUDA stream handle or a CuPy stream, got {stream!r}")
    return cupy.cuda.Stream.null if handle == 0 else cupy.cuda.ExternalStream(handle)


# Device copies of recent tables, keyed by (device, stream, table bytes): parameters and state
# keep their addresses from step to step, so a training loop uploads its table once.
_TABLES: collections.OrderedDict[tuple[int, int, bytes], Any] = collections.OrderedDict()
_TABLES_KEPT = 32


def _device_table(cupy: Any, table: np.ndarray, device: int, stream: Any) -> Any:
    key = (device, int(stream.ptr), table.tobytes())
    found = _TABLES.get(key)
    if found is not None:
        _TABLES.move_to_end(key)
        return found
    found = cupy.asarray(table)  # on the current (= our) stream, so ordered before the kernel
    _TABLES[key] = found
    if len(_TABLES) > _TABLES_KEPT:
        _TABLES.popitem(last=False)
    return found


def multi_tensor_step(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any] | None,
    step: int,
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    partial: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    variant: str,
    stream: Any = None,
) -> None:
    """One Padam step for many CUDA arrays, in place (COMMON decision 4's signature).

    Args:
      params, grads, exp_avgs, exp_avg_sqs: lists of arrays of equal length; state arrays are
        float32 for float16/bfloat16/float32 params and float64 for float64 params.
      max_exp_avg_sqs: the running maxima (amsgrad=True); ignored (may be None or empty) when
        amsgrad=False.
      step: the 1-based count of this step (a Python int).
      lr, b1, b2, eps, partial, weight_decay, decoupled_weight_decay, amsgrad, maximize, variant:
        as :func:`padam_core.padam_step`; already validated Python numbers.
      stream: a CUDA stream handle, a CuPy stream or an object with ``cuda_stream``; None: CuPy's
        current stream.

    Every array is checked (dtype, shape, contiguity, one device) before anything is launched.
    """
    lists = [params, grads, exp_avgs, exp_avg_sqs]
    names = ["params", "grads", "exp_avgs", "exp_avg_sqs"]
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sqs (the running maxima), got None")
        lists.append(max_exp_avg_sqs)
        names.append("max_exp_avg_sqs")
    buffers = [_buffers(arrays, name) for name, arrays in zip(names, lists, strict=True)]
    launches = _plan(
        buffers[0], buffers[1], buffers[2], buffers[3], buffers[4] if amsgrad else None, step,
        lr=lr, b1=b1, b2=b2, eps=eps,
        partial=partial, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
        amsgrad=amsgrad, maximize=maximize, variant=variant,
    )  # fmt: skip
    if not launches:
        return
    if not available():
        raise RuntimeError("padam_core.fused_cuda needs CuPy and a CUDA device")
    cupy = _cupy()
    device = next(b[_DEVICE] for b in buffers[0] if b[_SIZE])
    with cupy.cuda.Device(device):
        cuda_stream = _stream(cupy, stream)
        with cuda_stream:
            for launch in launches:
                table = _device_table(cupy, launch.table, device, cuda_stream)
                split = 6 * launch.n_tensors
                grid = min(launch.n_chunks, _MAX_GRID)
                _kernel(device, launch.kind)(
                    (grid,), (BLOCK_SIZE,),
                    (table[:split], table[split:], np.int64(launch.n_chunks),
                     np.int64(launch.chunk_size), np.int32(launch.config), *launch.scalars),
                )  # fmt: skip
