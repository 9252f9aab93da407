"""A fused, in-place, multi-tensor Padam step for NumPy arrays, compiled with numba.

The canonical kernel (:mod:`padam_core.kernel`) is pure and allocates about a dozen temporaries
per step. This path reads theta, g, m, v, v_hat once and writes theta, m, v, v_hat once, for a
whole list of arrays in ONE compiled call: the arrays are passed as a table of addresses, the
concatenated element range is cut into fixed-size chunks (:data:`CHUNK` elements, never across
two arrays) and the chunks are shared among the threads, so a thousand small arrays cost what
one array of the same total size costs and the threads stay balanced.

It mutates its arguments, so it is a separate function, tested against the pure kernel: the same
operations in the same order, scalars rounded to the compute dtype as NumPy rounds Python
floats, so for float32/float64 the results agree to the last bit (a general ``partial`` uses
:func:`padam_core.kernel.partial_power`'s ``exp2(2p * log2 x)``, here as polynomials, within a
few ulps). float16 and bfloat16 parameters (NumPy float16, ``ml_dtypes.bfloat16``, or their
``uint16``/``int16`` bit views, e.g. from torch) with float32 state compute in float32 and are
rounded once, to nearest even, from their bits inside the loop. Overflow saturates as in the
array kernel (see :func:`padam_core.kernel.padam_step`): the effective gradient is clipped to
+-finfo.max of the compute dtype, v and the value entering the running max to <= finfo.max.

Compiled code is cached on disk (numba ``cache=True``; ``NUMBA_CACHE_DIR`` moves the cache), so
only the first process ever pays the compile; a later process loads it without numba's full
registry refresh (:mod:`padam_core._numba_cache`), and numba itself is imported on first use
(``import padam_core`` does not import it; :class:`padam_core.Padam`'s constructor does, when
the fused path applies). The configuration (variant, power, amsgrad,
coupled decay, storage kind) reaches the loop as the *lengths* of small tuples: a tuple's length
is part of its numba type, so each configuration gets its own specialisation with the branches
folded away, and all of them live in one cacheable top-level function. ``NUMBA_NUM_THREADS``
sets the threads.

Available only when numba is installed (``pip install padam[fast]``); :func:`available` says so.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any, cast

import numpy as np
from array_api_compat import array_namespace

from padam_core.hyperparameters import DEFAULT_VARIANT
from padam_core.kernel import SQRT_CHAIN_LENGTHS, bias_correction

__all__ = [
    "CHUNK",
    "POW_GENERAL",
    "all_finite",
    "available",
    "multi_tensor_step",
    "padam_step_inplace",
    "power_mode",
    "supports",
]

_LOOP_MODULE = "padam_core._fused_cpu_loop"
# The loop's module, or None without numba: assigned by _load_loop on first use (until then
# module __getattr__ answers for it). Setting it to None turns the fused path off (tests).
_loop: ModuleType | None
_UNLOADED = object()

CHUNK = 1 << 15  # elements per unit of parallel work (128 KiB of float32 per array)
_VARIANT_CODES = {"reference": 0, "torch": 1, "optax": 2}
POW_GENERAL = -1  # power mode: -1 = exp2/log2, 0..3 = that many extra square roots, 4 = exactly 1
POW_ONE = 4
_MODE_TAG_LENGTH = {POW_ONE: 0, 0: 1, 1: 2, 2: 3, 3: 4, POW_GENERAL: 5}
_NATIVE, _FLOAT16, _BFLOAT16 = 0, 1, 2  # storage kinds of the parameter (and gradient)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_BITS16 = (np.dtype(np.uint16), np.dtype(np.int16))


def _load_loop() -> ModuleType | None:
    """The compiled loop's module, imported on first use; None where numba is missing.

    Importing numba costs about 0.4 s, so ``import padam_core`` does not: the first call of
    :func:`available` (or of a fused step) does. Cached compiled code is then loaded from disk
    without numba's full registry refresh (:mod:`padam_core._numba_cache`).
    """
    module = globals().get("_loop", _UNLOADED)
    if module is _UNLOADED:
        try:
            module = importlib.import_module(_LOOP_MODULE)
        except ImportError:  # pragma: no cover - exercised where numba is absent
            module = None
        globals()["_loop"] = module  # later reads of fused_cpu._loop skip __getattr__
    return cast("ModuleType | None", module)


def __getattr__(name: str) -> Any:
    """``fused_cpu._loop``: the loop's module (imported now, see :func:`_load_loop`) or None."""
    if name == "_loop":
        return _load_loop()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available() -> bool:
    """Whether numba is installed, so the fused path can run (imports numba on first call)."""
    return _load_loop() is not None


def _parallel(loop: ModuleType, chunk_count: int) -> bool:
    """Whether to share the chunks among numba's threads: not for fewer chunks than threads
    (the idle threads' wake-up would cost more than the work). One chunk never asks for the
    thread count: that starts numba's threading layer, tens of ms in a fresh process."""
    return chunk_count >= 2 and chunk_count >= loop.numba.get_num_threads()


def _storage_kind(dtype: np.dtype) -> int | None:
    """_NATIVE for float32/float64, _FLOAT16, _BFLOAT16 (ml_dtypes or bits), None otherwise."""
    if dtype in _FLOATS:
        return _NATIVE
    if dtype == np.float16:
        return _FLOAT16
    if dtype.name == "bfloat16":
        return _BFLOAT16
    return None


def supports(*arrays: Any) -> bool:
    """Whether these arrays (param, grad, moments) can take the single-array fused path.

    NumPy, contiguous, writable, one shape; float32/float64 all alike, or a float16/bfloat16
    parameter and gradient with float32 moments.
    """
    if not available() or not all(isinstance(a, np.ndarray) for a in arrays):
        return False
    first = arrays[0]
    kind = _storage_kind(first.dtype)
    if kind is None:
        return False
    state_dtype = first.dtype if kind == _NATIVE else np.dtype(np.float32)
    return (
        all(a.shape == first.shape for a in arrays)
        and all(a.flags.c_contiguous and a.flags.writeable for a in arrays)
        and all(a.dtype == first.dtype for a in arrays[:2])
        and all(a.dtype == state_dtype for a in arrays[2:])
    )


def power_mode(partial: float) -> int:
    """-1: general power; 0..3: that many square roots after the first; 4: exactly 1."""
    if partial == 0.0:
        return POW_ONE
    return SQRT_CHAIN_LENGTHS.get(partial, POW_GENERAL)


# ---- the compiled loop ------------------------------------------------------------------

# Scalars, in the compute dtype, in this order (one small array argument).
_SCALARS = (
    "b1", "one_minus_b1", "b2", "one_minus_b2", "eps", "decay_factor", "step_size", "bc1",
    "bc2", "sqrt_bc2", "lr", "two_partial", "one", "sign", "l2", "finfo_max",
)  # fmt: skip


def _scalars(
    compute: np.dtype, step: int, *, lr: float, b1: float, b2: float, eps: float,
    partial: float, weight_decay: float, decoupled_weight_decay: bool, maximize: bool,
    variant: str,
) -> np.ndarray:  # fmt: skip
    bc1 = bias_correction(b1, step, xp=np, dtype=compute)
    bc2 = bias_correction(b2, step, xp=np, dtype=compute)
    step_size = {0: lr * math.sqrt(bc2) / bc1, 1: lr / bc1, 2: lr}[_VARIANT_CODES[variant]]
    values = dict(
        b1=b1, one_minus_b1=1.0 - b1, b2=b2, one_minus_b2=1.0 - b2, eps=eps,
        decay_factor=1.0 - lr * weight_decay if decoupled_weight_decay else 1.0,
        step_size=step_size, bc1=bc1, bc2=bc2, sqrt_bc2=math.sqrt(bc2), lr=lr,
        two_partial=2.0 * partial, one=1.0, sign=-1.0 if maximize else 1.0,
        l2=0.0 if decoupled_weight_decay else weight_decay, finfo_max=np.finfo(compute).max,
    )  # fmt: skip
    # NumPy rounds Python floats to the array dtype (NEP 50): so does this cast.
    return np.array([values[name] for name in _SCALARS], dtype=np.float64).astype(compute)


def _group_key(param: np.ndarray, state_dtype: np.dtype) -> tuple[int, np.dtype]:
    kind = _storage_kind(param.dtype)
    if kind is None and param.dtype in _BITS16:
        kind = _BFLOAT16  # torch bfloat16 tensors arrive as 16-bit integer views
    if kind is None:
        raise TypeError(f"multi_tensor_step cannot take parameters of dtype {param.dtype}")
    compute = param.dtype if kind == _NATIVE else np.dtype(np.float32)
    if state_dtype != compute:
        raise TypeError(
            f"multi_tensor_step needs {compute} state for {param.dtype} parameters, "
            f"got {state_dtype}"
        )
    return kind, compute


def multi_tensor_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avgs: Sequence[np.ndarray],
    exp_avg_sqs: Sequence[np.ndarray],
    max_exp_avg_sqs: Sequence[np.ndarray] | None,
    step: int,
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    partial: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = True,
    maximize: bool = False,
    variant: str = DEFAULT_VARIANT,
) -> None:
    """:func:`padam_core.padam_step` for a list of arrays, fused, in place, in one compiled call.

    Every array must be a contiguous, writable NumPy array; ``grads[k]`` has the shape and dtype
    of ``params[k]``, the moments its shape and the compute dtype (the parameter's for
    float32/float64, float32 for float16/bfloat16 parameters, which may be given as ``uint16``
    or ``int16`` bit views: integer views are read as bfloat16). ``max_exp_avg_sqs`` is None or
    empty when ``amsgrad=False``. ``step`` is the 1-based count of this step; hyperparameters
    are validated Python numbers. Everything is checked before the first write (``TypeError`` /
    ``ValueError``); the arrays may mix dtypes (one compiled call per dtype).
    """
    loop = _load_loop()
    if loop is None:  # pragma: no cover - exercised where numba is absent
        raise RuntimeError("padam_core.fused_cpu needs numba (pip install padam[fast])")
    n = len(params)
    lists = [params, grads, exp_avgs, exp_avg_sqs]
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sqs (the running maxima), got None")
        lists.append(max_exp_avg_sqs)
    maxima = max_exp_avg_sqs if amsgrad and max_exp_avg_sqs is not None else exp_avg_sqs
    if any(len(arrays) != n for arrays in lists):
        raise ValueError(f"multi_tensor_step needs lists of one length: {[len(a) for a in lists]}")
    if variant not in _VARIANT_CODES:
        raise ValueError(f"Invalid variant value: {variant!r}")
    # Checks first: nothing is written before all pass. (Plain code, no generators: this loop
    # is the per-array cost of a call, about a microsecond per array.)
    ndarray = np.ndarray
    kinds: dict[tuple[np.dtype, np.dtype], tuple[int, np.dtype]] = {}
    groups: dict[tuple[int, np.dtype], tuple[list[tuple[int, ...]], list[int]]] = {}
    for k in range(n):
        p, g, m, v = params[k], grads[k], exp_avgs[k], exp_avg_sqs[k]
        h = maxima[k]  # without amsgrad v twice: the loop skips v_hat then
        if not (
            isinstance(p, ndarray) and isinstance(g, ndarray) and isinstance(m, ndarray)
            and isinstance(v, ndarray) and isinstance(h, ndarray)
        ):  # fmt: skip
            raise TypeError(f"multi_tensor_step needs NumPy arrays (entry {k})")
        # carray: C-contiguous, aligned and writable.
        if not (p.flags.carray and g.flags.carray and m.flags.carray and v.flags.carray
                and h.flags.carray):  # fmt: skip
            raise TypeError(f"multi_tensor_step needs contiguous writable arrays (entry {k})")
        shape = p.shape
        if not (g.shape == shape and m.shape == shape and v.shape == shape and h.shape == shape):
            raise ValueError(f"multi_tensor_step: shapes differ in entry {k}")
        param_dtype, state_dtype = p.dtype, m.dtype
        if not (g.dtype == param_dtype and v.dtype == state_dtype and h.dtype == state_dtype):
            raise TypeError(f"multi_tensor_step: dtypes differ in entry {k}")
        key = kinds.get((param_dtype, state_dtype))
        if key is None:
            key = kinds[param_dtype, state_dtype] = _group_key(p, state_dtype)
        size = p.size
        if size:
            if key[0] != _NATIVE and param_dtype not in _BITS16:
                p, g = p.view(np.uint16), g.view(np.uint16)  # numba cannot type bfloat16
            rows, row_sizes = groups.setdefault(key, ([], []))
            rows.append(loop.addresses(p, g, m, v, h))
            row_sizes.append(size)
    hyperparameters: dict[str, Any] = dict(
        lr=lr, b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, variant=variant,
    )  # fmt: skip
    variant_tag = (0,) * _VARIANT_CODES[variant]
    mode_tag = (0,) * _MODE_TAG_LENGTH[power_mode(float(partial))]
    # len(flag_tag): bit 0 amsgrad, bit 1 coupled L2 decay (g + l2 * theta).
    coupled = weight_decay != 0.0 and not decoupled_weight_decay
    flag_tag = (0,) * (int(amsgrad) + 2 * int(coupled))
    for (kind, compute), (rows, size_list) in groups.items():
        addresses = np.array(rows, dtype=np.int64)
        sizes = np.array(size_list, dtype=np.int64)
        per_array = -(-sizes // CHUNK)  # chunks per array
        owner = np.repeat(np.arange(len(rows), dtype=np.int64), per_array)
        first_chunk = np.cumsum(per_array) - per_array
        start = (np.arange(owner.size, dtype=np.int64) - first_chunk[owner]) * CHUNK
        chunks = np.stack([owner, start, np.minimum(start + CHUNK, sizes[owner])], axis=1)
        raw_like = np.empty(0, dtype=compute if kind == _NATIVE else np.uint16)
        kind_tag = (0,) * kind
        scalars = _scalars(compute, step, **hyperparameters)
        parallel = _parallel(loop, len(chunks))
        kernel = loop.multi_tensor_kernel if parallel else loop.multi_tensor_kernel_serial
        kernel(addresses, chunks, scalars, raw_like, variant_tag, mode_tag, flag_tag, kind_tag)
    # The arrays are only reached through their addresses: keep them alive until here.
    del lists


def padam_step_inplace(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None,
    step: int,
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    partial: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = True,
    maximize: bool = False,
    variant: str = DEFAULT_VARIANT,
) -> None:
    """:func:`padam_core.padam_step` fused and in place: updates param and the state arrays.

    All arrays must pass :func:`supports`; hyperparameters are Python numbers (already
    validated by the caller). ``max_exp_avg_sq`` may be None only when ``amsgrad=False``.
    A one-array call of :func:`multi_tensor_step`.
    """
    arrays = [param, grad, exp_avg, exp_avg_sq] + ([max_exp_avg_sq] if amsgrad else [])
    if not supports(*arrays):
        raise TypeError("padam_step_inplace needs contiguous NumPy float32/float64 arrays alike")
    multi_tensor_step(
        [param], [grad], [exp_avg], [exp_avg_sq],
        [max_exp_avg_sq] if amsgrad and max_exp_avg_sq is not None else None, step,
        lr=lr, b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
        variant=variant,
    )  # fmt: skip


# ---- the non-finite guard ---------------------------------------------------------------

_U16, _U32, _U64 = np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64)
# dtype -> (unsigned type of one real element, magnitude mask, smallest non-finite magnitude):
# an element is inf or NaN exactly when (bits & mask) >= limit (the exponent all ones).
_F16_BITS = (_U16, 0x7FFF, 0x7C00)
_BF16_BITS = (_U16, 0x7FFF, 0x7F80)
_F32_BITS = (_U32, 0x7FFF_FFFF, 0x7F80_0000)
_F64_BITS = (_U64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000)
_FINITE_BITS: dict[np.dtype, tuple[np.dtype, int, int]] = {
    np.dtype(np.float16): _F16_BITS,
    np.dtype(np.uint16): _BF16_BITS,  # bit views of bfloat16, as in multi_tensor_step
    np.dtype(np.int16): _BF16_BITS,
    np.dtype(np.float32): _F32_BITS,
    np.dtype(np.complex64): _F32_BITS,  # two float32 per element
    np.dtype(np.float64): _F64_BITS,
    np.dtype(np.complex128): _F64_BITS,
}


def _finite_bits(dtype: np.dtype) -> tuple[np.dtype, int, int] | None:
    spec = _FINITE_BITS.get(dtype)
    if spec is None and dtype.name == "bfloat16":  # ml_dtypes
        return _BF16_BITS
    return spec


def _array_all_finite(array: Any) -> bool:
    """One array, through its own namespace (any array API array; integers are finite, but
    for NumPy ``uint16``/``int16``, read as bfloat16 bits)."""
    if isinstance(array, np.ndarray):
        if array.dtype in _BITS16:  # bfloat16 bits, as on the compiled path
            return bool(((array.view(np.uint16) & 0x7FFF) < 0x7F80).all())
        if array.dtype.kind in "biu":
            return True
        return bool(np.isfinite(array).all())
    xp = array_namespace(array)
    if xp.isdtype(array.dtype, ("bool", "integral")):
        return True
    return bool(xp.all(xp.isfinite(array)))


def all_finite(arrays: Iterable[Any]) -> bool:
    """Whether every element of every array is finite (True for no arrays, or empty ones).

    The non-finite guard's check (``skip_nonfinite=True``), compiled: contiguous NumPy arrays of
    float16, bfloat16 (``ml_dtypes``, or ``uint16``/``int16`` bit views as in
    :func:`multi_tensor_step`: those are read as bfloat16 bits), float32, float64, complex64 and
    complex128 are read once, as unsigned bits, in one parallel compiled reduction per element
    width, with no temporaries. Other arrays (non-contiguous, other integer or bool dtypes,
    CuPy/torch/JAX arrays) and every array where numba is missing go through their namespace's
    ``isfinite`` (:func:`padam_core.all_finite`'s test). Only reads: arrays may be read-only.
    """
    arrays = list(arrays)  # keeps every array alive while the kernel reads it by address
    # unsigned type -> (mask, limit, addresses, sizes in elements of that type)
    groups: dict[tuple[np.dtype, int, int], tuple[list[int], list[int]]] = {}
    loop = _load_loop()
    if loop is None:  # pragma: no cover - exercised where numba is absent
        return all(map(_array_all_finite, arrays))
    ndarray = np.ndarray
    for array in arrays:
        spec = _finite_bits(array.dtype) if isinstance(array, ndarray) else None
        if spec is None or not (array.flags.c_contiguous and array.flags.aligned):
            if not _array_all_finite(array):
                return False
            continue
        size = array.size
        if not size:
            continue
        if array.dtype.itemsize == 2:
            array = array.view(np.uint16)  # numba types neither float16 nor bfloat16 here
        elif array.dtype.kind == "c":
            size *= 2
        array_addresses, array_sizes = groups.setdefault(spec, ([], []))
        array_addresses.append(loop.data_address(array))
        array_sizes.append(size)
    for (unsigned, mask, limit), (address_list, size_list) in groups.items():
        addresses = np.array(address_list, dtype=np.int64)
        sizes = np.array(size_list, dtype=np.int64)
        per_array = -(-sizes // CHUNK)
        owner = np.repeat(np.arange(len(address_list), dtype=np.int64), per_array)
        first_chunk = np.cumsum(per_array) - per_array
        start = (np.arange(owner.size, dtype=np.int64) - first_chunk[owner]) * CHUNK
        chunks = np.stack([owner, start, np.minimum(start + CHUNK, sizes[owner])], axis=1)
        parallel = _parallel(loop, len(chunks))
        kernel = loop.all_finite_kernel if parallel else loop.all_finite_kernel_serial
        typed = unsigned.type
        if not kernel(addresses, chunks, np.empty(0, unsigned), typed(mask), typed(limit)):
            return False
    del arrays
    return True
