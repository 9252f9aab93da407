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
only the first process ever pays the compile. The configuration (variant, power, amsgrad,
coupled decay, storage kind) reaches the loop as the *lengths* of small tuples: a tuple's length
is part of its numba type, so each configuration gets its own specialisation with the branches
folded away, and all of them live in one cacheable top-level function. ``NUMBA_NUM_THREADS``
sets the threads.

Available only when numba is installed (``pip install padam[fast]``); :func:`available` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from padam_core.kernel import SQRT_CHAIN_LENGTHS, bias_correction

__all__ = [
    "CHUNK",
    "POW_GENERAL",
    "available",
    "multi_tensor_step",
    "padam_step_inplace",
    "power_mode",
    "supports",
]

try:
    from padam_core import _fused_cpu_loop as _loop
except ImportError:  # pragma: no cover - exercised where numba is absent
    _loop = None

CHUNK = 1 << 15  # elements per unit of parallel work (128 KiB of float32 per array)
_VARIANT_CODES = {"reference": 0, "torch": 1, "optax": 2}
POW_GENERAL = -1  # power mode: -1 = exp2/log2, 0..3 = that many extra square roots, 4 = exactly 1
POW_ONE = 4
_MODE_TAG_LENGTH = {POW_ONE: 0, 0: 1, 1: 2, 2: 3, 3: 4, POW_GENERAL: 5}
_NATIVE, _FLOAT16, _BFLOAT16 = 0, 1, 2  # storage kinds of the parameter (and gradient)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_BITS16 = (np.dtype(np.uint16), np.dtype(np.int16))


def available() -> bool:
    """Whether numba is installed, so the fused path can run."""
    return _loop is not None


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


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


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
    variant: str = "reference",
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
    if not available():  # pragma: no cover - exercised where numba is absent
        raise RuntimeError("padam_core.fused_cpu needs numba (pip install padam[fast])")
    n = len(params)
    lists = [params, grads, exp_avgs, exp_avg_sqs]
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sqs (the running maxima), got None")
        lists.append(max_exp_avg_sqs)
    if any(len(arrays) != n for arrays in lists):
        raise ValueError(f"multi_tensor_step needs lists of one length: {[len(a) for a in lists]}")
    groups: dict[tuple[int, np.dtype], list[int]] = {}
    for k in range(n):
        param = params[k]
        row = [arrays[k] for arrays in lists]
        if not all(isinstance(a, np.ndarray) for a in row):
            raise TypeError(f"multi_tensor_step needs NumPy arrays (entry {k})")
        if not all(a.flags.c_contiguous and a.flags.writeable for a in row):
            raise TypeError(f"multi_tensor_step needs contiguous writable arrays (entry {k})")
        if not all(a.shape == param.shape for a in row):
            raise ValueError(f"multi_tensor_step: shapes differ in entry {k}")
        if row[1].dtype != param.dtype or any(a.dtype != row[2].dtype for a in row[3:]):
            raise TypeError(f"multi_tensor_step: dtypes differ in entry {k}")
        groups.setdefault(_group_key(param, row[2].dtype), []).append(k)
    hyperparameters = dict(
        lr=lr, b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, variant=variant,
    )  # fmt: skip
    if variant not in _VARIANT_CODES:
        raise ValueError(f"Invalid variant value: {variant!r}")
    variant_tag = (0,) * _VARIANT_CODES[variant]
    mode_tag = (0,) * _MODE_TAG_LENGTH[power_mode(float(partial))]
    # len(flag_tag): bit 0 amsgrad, bit 1 coupled L2 decay (g + l2 * theta).
    coupled = weight_decay != 0.0 and not decoupled_weight_decay
    flag_tag = (0,) * (int(amsgrad) + 2 * int(coupled))
    for (kind, compute), members in groups.items():
        sizes = np.array([params[k].size for k in members], dtype=np.int64)
        if not sizes.any():
            continue
        addresses = np.empty((len(members), 5), dtype=np.int64)
        for row, k in enumerate(members):
            moments = lists[2:] if amsgrad else [exp_avgs, exp_avg_sqs, exp_avg_sqs]
            addresses[row] = [_address(params[k]), _address(grads[k])] + [
                _address(arrays[k]) for arrays in moments
            ]
        per_array = -(-sizes // CHUNK)  # chunks per array
        owner = np.repeat(np.arange(len(members), dtype=np.int64), per_array)
        first_chunk = np.cumsum(per_array) - per_array
        start = (np.arange(owner.size, dtype=np.int64) - first_chunk[owner]) * CHUNK
        chunks = np.stack([owner, start, np.minimum(start + CHUNK, sizes[owner])], axis=1)
        raw_like = np.empty(0, dtype=compute if kind == _NATIVE else np.uint16)
        kind_tag = (0,) * kind
        scalars = _scalars(compute, step, **hyperparameters)
        _loop.multi_tensor_kernel(
            addresses, chunks, scalars, raw_like, variant_tag, mode_tag, flag_tag, kind_tag
        )
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
    variant: str = "reference",
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
        [param], [grad], [exp_avg], [exp_avg_sq], [max_exp_avg_sq] if amsgrad else None, step,
        lr=lr, b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
        variant=variant,
    )  # fmt: skip
