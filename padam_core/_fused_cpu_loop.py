"""The numba loop behind :mod:`padam_core.fused_cpu` (imported only where numba is installed).

Everything compiled lives in this one file: numba's disk cache checks only the stamp of the file
that defines a cached function, so a helper changed in another file would leave stale code.
The configuration arrives as tuple lengths (see :mod:`padam_core.fused_cpu`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import types as _nb_types
from numba.extending import intrinsic, overload


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True)``, or without the disk cache where no location is writable.

    numba tries ``NUMBA_CACHE_DIR``, the source tree's ``__pycache__`` and a user-wide folder;
    when none can be written it raises at decoration time: compile per process instead.
    """

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(**options)(function)

    return decorate


@intrinsic
def _pointer(typingctx, address, like):
    """A typed pointer (element type of the array ``like``) from an integer address."""
    target = _nb_types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(target))

    return target(address, like), codegen


def _to_compute(raw, kind_tag):  # pragma: no cover - replaced by the overload in numba
    raise NotImplementedError


def _from_compute(value, like_raw, kind_tag):  # pragma: no cover - as above
    raise NotImplementedError


@intrinsic
def _bits_to_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_nb_types.float32))

    return _nb_types.float32(_nb_types.uint32), codegen


@intrinsic
def _f32_to_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_nb_types.uint32))

    return _nb_types.uint32(_nb_types.float32), codegen


@_jit()
def _half_to_f32(h):
    h = np.uint32(h) & np.uint32(0xFFFF)
    magnitude = (h & np.uint32(0x7FFF)) << np.uint32(13)
    # Normal and subnormal halves: the bits shifted into place are the value * 2^-112.
    value = _bits_to_f32(magnitude) * np.float32(5.192296858534828e33)  # 2^112
    if (h & np.uint32(0x7C00)) == np.uint32(0x7C00):  # inf and NaN
        value = _bits_to_f32(magnitude | np.uint32(0x7F800000))
    return -value if (h & np.uint32(0x8000)) else value


@_jit()
def _f32_to_half(value):
    """Round to nearest even (NumPy's float16 cast), NaN stays NaN, overflow gives inf."""
    f = _f32_to_bits(value)
    sign = (f >> np.uint32(16)) & np.uint32(0x8000)
    f = f & np.uint32(0x7FFFFFFF)
    if f >= np.uint32(0x47800000):  # >= 65536 (in float32 bits), inf or NaN
        out = np.uint32(0x7E00) if f > np.uint32(0x7F800000) else np.uint32(0x7C00)
    elif f < np.uint32(0x38800000):  # below 2^-14: a subnormal half or zero
        # Adding 0.5 rounds (to nearest even) the value to a multiple of 2^-24.
        rounded = _bits_to_f32(f) + np.float32(0.5)
        out = _f32_to_bits(rounded) - np.uint32(0x3F000000)
    else:
        odd = (f >> np.uint32(13)) & np.uint32(1)
        out = (f + np.uint32(0xC8000FFF) + odd) >> np.uint32(13)  # rebias: -112 << 23
    return np.uint16((out | sign) & np.uint32(0xFFFF))


@_jit()
def _bf16_to_f32(h):
    return _bits_to_f32((np.uint32(h) & np.uint32(0xFFFF)) << np.uint32(16))


@_jit()
def _f32_to_bf16(value):
    """Round to nearest even on the bits (as ml_dtypes and torch); NaN stays a quiet NaN."""
    f = _f32_to_bits(value)
    if (f & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16((f >> np.uint32(16)) | np.uint32(0x0040))
    odd = (f >> np.uint32(16)) & np.uint32(1)
    return np.uint16((f + np.uint32(0x7FFF) + odd) >> np.uint32(16))


@overload(_to_compute)
def _to_compute_overload(raw, kind_tag):
    if isinstance(raw, _nb_types.Float):
        return lambda raw, kind_tag: raw
    if len(kind_tag) == 1:  # float16 bits
        return lambda raw, kind_tag: _half_to_f32(raw)
    return lambda raw, kind_tag: _bf16_to_f32(raw)


@overload(_from_compute)
def _from_compute_overload(value, like_raw, kind_tag):
    if isinstance(like_raw, _nb_types.Float):
        return lambda value, like_raw, kind_tag: value
    if len(kind_tag) == 1:
        return lambda value, like_raw, kind_tag: _f32_to_half(value)
    return lambda value, like_raw, kind_tag: _f32_to_bf16(value)


@_jit()
def _power(root, two_partial, one, mode_tag):
    """root ** (2 * partial), as kernel.partial_power; the mode is len(mode_tag)."""
    mode = len(mode_tag)
    if mode == 0:
        return one  # typed like root: a literal 1 would turn float32 math into float64
    if mode == 5:
        return root**two_partial
    # mode - 1 (0..3) extra square roots after the one the caller took.
    if mode >= 2:
        root = np.sqrt(root)
    if mode >= 3:
        root = np.sqrt(root)
    if mode >= 4:
        root = np.sqrt(root)
    return root


@_jit(error_model="numpy")
def _chunk_loop(p, g, m, v, vh, start, stop, s, variant_tag, mode_tag, flag_tag, kind_tag):
    variant, amsgrad, coupled = len(variant_tag), len(flag_tag) & 1, len(flag_tag) >= 2
    b1, one_minus_b1, b2, one_minus_b2 = s[0], s[1], s[2], s[3]
    eps, decay_factor, step_size, bc1, bc2, sqrt_bc2 = s[4], s[5], s[6], s[7], s[8], s[9]
    lr, two_partial, one, sign, l2, finfo_max = s[10], s[11], s[12], s[13], s[14], s[15]
    for i in range(start, stop):
        # sign is -1 or 1, decay_factor is 1 without decoupled decay: multiplying by them
        # changes no bits (of inf and NaN neither).
        raw = p[i]
        theta = _to_compute(raw, kind_tag)
        grad = sign * _to_compute(g[i], kind_tag)
        if coupled:
            grad = grad + l2 * theta
        grad = finfo_max if grad > finfo_max else grad  # saturate, NaN stays NaN
        grad = -finfo_max if grad < -finfo_max else grad
        theta = theta * decay_factor
        mi = b1 * m[i] + one_minus_b1 * grad
        vi = b2 * v[i] + one_minus_b2 * (grad * grad)
        vi = finfo_max if vi > finfo_max else vi
        second = vi / bc2 if variant == 2 else vi
        second = finfo_max if second > finfo_max else second
        v_hat = np.maximum(vh[i], second) if amsgrad else second
        if variant == 0:
            denominator = _power(np.sqrt(v_hat) + eps, two_partial, one, mode_tag)
            theta = theta - step_size * mi / denominator
        elif variant == 1:
            denominator = _power(np.sqrt(v_hat) / sqrt_bc2, two_partial, one, mode_tag) + eps
            theta = theta - step_size * mi / denominator
        else:
            root = _power(np.sqrt(v_hat), two_partial, one, mode_tag)
            theta = theta - lr * (mi / bc1) / (root + eps)
        p[i] = _from_compute(theta, raw, kind_tag)
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vh[i] = v_hat


@_jit(parallel=True)
def multi_tensor_kernel(addresses, chunks, s, raw_like, variant_tag, mode_tag, flag_tag, kind_tag):
    """addresses[k] = (param, grad, m, v, v_hat) of array k; chunks[c] = (k, start, stop)."""
    for c in numba.prange(chunks.shape[0]):
        k = chunks[c, 0]
        _chunk_loop(
            _pointer(addresses[k, 0], raw_like), _pointer(addresses[k, 1], raw_like),
            _pointer(addresses[k, 2], s), _pointer(addresses[k, 3], s),
            _pointer(addresses[k, 4], s), chunks[c, 1], chunks[c, 2], s,
            variant_tag, mode_tag, flag_tag, kind_tag,
        )  # fmt: skip


@_jit()
def f32_to_half_array(values):  # for the tests: the kernel's float32 -> float16 bits
    out = np.empty(values.shape, dtype=np.uint16)
    for i in range(values.size):
        out[i] = _f32_to_half(values[i])
    return out


@_jit()
def f32_to_bf16_array(values):  # for the tests: the kernel's float32 -> bfloat16 bits
    out = np.empty(values.shape, dtype=np.uint16)
    for i in range(values.size):
        out[i] = _f32_to_bf16(values[i])
    return out
