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

from padam_core import _numba_cache


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True)``, or without the disk cache where no location is writable.

    numba tries ``NUMBA_CACHE_DIR``, the source tree's ``__pycache__`` and a user-wide folder;
    when none can be written it raises at decoration time: compile per process instead. A
    cached function is loaded by :class:`padam_core._numba_cache.NarrowLoadCache`.
    """

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            dispatcher = numba.njit(cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(**options)(function)
        return _numba_cache.install(dispatcher)  # loads without numba's full refresh

    return decorate


@intrinsic
def _pointer(typingctx, address, like):
    """A typed pointer (element type of the array ``like``) from an integer address."""
    target = _nb_types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(target))

    return target(address, like), codegen


@intrinsic
def _data_address(typingctx, array):
    """The integer address of an array's first element."""

    def codegen(context, builder, signature, args):
        data = context.make_array(array)(context, builder, args[0]).data
        return builder.ptrtoint(data, context.get_value_type(_nb_types.int64))

    return _nb_types.int64(array), codegen


@_jit()
def addresses(a, b, c, d, e):
    """The data addresses of five arrays, in one call: numba unboxes arrays in C, several
    times faster than ``__array_interface__`` or ``.ctypes`` from Python."""
    return (
        _data_address(a), _data_address(b), _data_address(c), _data_address(d),
        _data_address(e),
    )  # fmt: skip


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


@intrinsic
def _f64_to_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_nb_types.uint64))

    return _nb_types.uint64(_nb_types.float64), codegen


@intrinsic
def _bits_to_f64(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_nb_types.float64))

    return _nb_types.float64(_nb_types.uint64), codegen


# ---- x ** y for 0 < y <= 1: exp2(y * log2 x) as branch-free polynomials ------------------
#
# libm's pow is a call per element, so a loop around it never vectorises; these functions are
# selects and arithmetic only, so LLVM vectorises the whole step (8 float32 or 4 float64 lanes
# on AVX2), in the parameter's own dtype. log2 x = e + log2 m with e an integer and m in
# [sqrt(1/2), sqrt(2)) from the bits, log2 m = 2/ln2 * atanh(z), z = (m - 1)/(m + 1), as an odd
# series. The product t = y * log2 x is where an error would be amplified (|t| up to ~150 for
# float32, ~1075 for float64: a plainly rounded t gives up to ~90 ulps at the ends of the
# range, as NumPy's float32 exp2(log2) does), so y is split as y_hi + y_lo with y_hi short
# enough that y_hi * e is exact: t = y_hi*e + (y_lo*e + y*log2 m), rounding only in the small
# second part. Then 2^t = 2^n * 2^r with n = round(t), |r| <= 1/2 (plus a hair), 2^r a Taylor
# polynomial, and 2^n applied as two exact power-of-two factors (so a subnormal result rounds
# once). FMA contraction is allowed in these functions only: it never loses accuracy here, and
# the rest of the step must stay bitwise the array kernel's. Max error, against mpmath in
# tests/core/test_power.py: a few ulps in float32 and float64, subnormal inputs included.

_F = np.float32
_ROUND32 = _F(12582912.0)  # 1.5 * 2^23: x + _ROUND32 - _ROUND32 rounds x to an integer
_BITS_ROUND32 = np.uint32(0x4B400000)  # bits of _ROUND32: + n in the low bits after rounding
_ROUND = 6755399441055744.0  # 1.5 * 2^52, the same for float64
_BITS_ROUND = np.uint64(0x4338000000000000)
_CONTRACT = {"contract"}  # numba fastmath flags: FMA contraction, nothing else


@_jit(fastmath=_CONTRACT, error_model="numpy", forceinline=True)
def _exp2_scale32(n):
    """2^n as a float32 for an integer-valued float32 n in [-126, 127]."""
    bits = _f32_to_bits(n + _ROUND32) - _BITS_ROUND32 + np.uint32(127)
    return _bits_to_f32(bits << np.uint32(23))


@_jit(fastmath=_CONTRACT, error_model="numpy", forceinline=True)
def _exp2_log2_f32(x, y):
    """x ** y for a positive finite float32 x (subnormal too) and 0 < y <= 1, float32 only."""
    tiny = x < _F(1.1754944e-38)  # 2^-126
    x = x * _F(16777216.0) if tiny else x  # 2^24: subnormals become normal
    u = _f32_to_bits(x)
    m = _bits_to_f32((u & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000))
    e = _bits_to_f32((u >> np.uint32(23)) | np.uint32(0x4B000000)) - _F(8388735.0)  # 2^23 + 127
    e = e - _F(24.0) if tiny else e
    big = m > _F(1.4142135)
    m = m * _F(0.5) if big else m
    e = e + _F(1.0) if big else e
    z = (m - _F(1.0)) / (m + _F(1.0))  # |z| <= 0.172; m - 1 is exact
    z2 = z * z
    z4 = z2 * z2
    # 2 / (k ln 2) for k = 1, 3, ..., 11, in Estrin's scheme (a shorter chain than Horner's:
    # the loop is bound by latency, not by the number of operations).
    series = (_F(2.8853900817779268) + _F(0.9617966939259757) * z2) + z4 * (
        (_F(0.5770780163555853) + _F(0.41219858311113244) * z2)
        + z4 * (_F(0.3205988979753252) + _F(0.2623081892525388) * z2)
    )
    # y_hi: y's leading 12 bits, so y_hi * e (|e| <= 150, 8 bits) is exact.
    y_hi = _bits_to_f32(_f32_to_bits(y) & np.uint32(0xFFFFF000))
    head = y_hi * e
    tail = (y - y_hi) * e + y * (z * series)
    n = ((head + tail) + _ROUND32) - _ROUND32
    r = (head - n) + tail  # head - n is exact
    r2 = r * r
    r4 = r2 * r2
    # ln2^k / k! for k = 0, ..., 7 (Estrin).
    poly = (
        (_F(1.0) + _F(0.6931471805599453) * r)
        + r2 * (_F(0.2402265069591007) + _F(0.055504108664821576) * r)
    ) + r4 * (
        (_F(0.009618129107628477) + _F(0.0013333558146428441) * r)
        + r2 * (_F(0.00015403530393381606) + _F(1.5252733804059838e-05) * r)
    )
    half = np.floor(n * _F(0.5))  # n in [-149, 128]: two factors, each a normal float32
    return poly * _exp2_scale32(half) * _exp2_scale32(n - half)


@_jit(fastmath=_CONTRACT, error_model="numpy", forceinline=True)
def _exp2_scale64(n):
    """2^n as a float64 for an integer-valued float64 n in [-1022, 1023]."""
    bits = _f64_to_bits(n + _ROUND) - _BITS_ROUND + np.uint64(1023)
    return _bits_to_f64(bits << np.uint64(52))


@_jit(fastmath=_CONTRACT, error_model="numpy", forceinline=True)
def _exp2_log2_f64(x, y):
    """x ** y for a positive finite float64 x (subnormal too) and 0 < y <= 1."""
    tiny = x < 2.2250738585072014e-308  # 2^-1022
    x = x * 18014398509481984.0 if tiny else x  # 2^54: subnormals become normal
    u = _f64_to_bits(x)
    m = _bits_to_f64((u & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000))
    e = _bits_to_f64((u >> np.uint64(52)) | np.uint64(0x4330000000000000)) - 4503599627371519.0
    e = e - 54.0 if tiny else e  # (the constant is 2^52 + 1023)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    z = (m - 1.0) / (m + 1.0)
    z2 = z * z
    z4 = z2 * z2
    z8 = z4 * z4
    # 2 / (k ln 2) for k = 1, 3, ..., 21 (Estrin).
    series = (
        ((2.8853900817779268 + 0.9617966939259757 * z2)
         + z4 * (0.5770780163555853 + 0.41219858311113244 * z2))
        + z8 * ((0.3205988979753252 + 0.2623081892525388 * z2)
                + z4 * (0.2219530832136867 + 0.19235933878519512 * z2))
    ) + (z8 * z8) * (
        (0.16972882833987804 + 0.15186263588304877 * z2) + z4 * 0.1373995277037108
    )  # fmt: skip
    # y_hi: y's leading 26 bits, so y_hi * e (|e| <= 1076, 11 bits) is exact.
    y_hi = _bits_to_f64(_f64_to_bits(y) & np.uint64(0xFFFFFFFFF8000000))
    head = y_hi * e
    tail = (y - y_hi) * e + y * (z * series)
    n = ((head + tail) + _ROUND) - _ROUND
    r = (head - n) + tail  # head - n is exact
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    # ln2^k / k! for k = 0, ..., 13 (Estrin).
    poly = (
        ((1.0 + 0.6931471805599453 * r)
         + r2 * (0.2402265069591007 + 0.055504108664821576 * r))
        + r4 * ((0.009618129107628477 + 0.0013333558146428441 * r)
                + r2 * (0.00015403530393381606 + 1.5252733804059838e-05 * r))
    ) + r8 * (
        ((1.3215486790144305e-06 + 1.0178086009239696e-07 * r)
         + r2 * (7.054911620801121e-09 + 4.44553827187081e-10 * r))
        + r4 * (2.5678435993488196e-11 + 1.3691488853904124e-12 * r)
    )  # fmt: skip
    half = np.floor(n * 0.5)  # n in [-1074, 1024]: two factors, each a normal float64
    return poly * _exp2_scale64(half) * _exp2_scale64(n - half)


def _general_power(root, two_partial):  # pragma: no cover - replaced by the overload in numba
    raise NotImplementedError


@overload(_general_power, jit_options={"error_model": "numpy", "forceinline": True})
def _general_power_overload(root, two_partial):
    """root ** two_partial for 0 < two_partial <= 1 with the polynomials above, in root's dtype;
    0, inf and NaN exact: 1 stands in (keeping the polynomials' input finite), then 0^y = 0,
    inf^y = inf and NaN stays NaN."""
    one = _F(1.0) if root == _nb_types.float32 else 1.0
    polynomial = _exp2_log2_f32 if root == _nb_types.float32 else _exp2_log2_f64

    def power(root, two_partial):
        # & (not `and`): two compares and a mask, no control flow to vectorise around.
        usual = (root > 0.0) & (root < np.inf)
        result = polynomial(root if usual else one, two_partial)
        return result if usual else root

    return power


@_jit(error_model="numpy", forceinline=True)
def _power(root, two_partial, one, mode_tag):
    """root ** (2 * partial), as kernel.partial_power; the mode is len(mode_tag)."""
    mode = len(mode_tag)
    if mode == 0:
        return one  # typed like root: a literal 1 would turn float32 math into float64
    if mode == 5:
        return _general_power(root, two_partial)
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


@_jit(error_model="numpy")
def general_power_array(values, two_partial):  # for the tests: the kernel's general power
    """``values ** two_partial`` elementwise (1-d, two_partial of values' dtype), as the step."""
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = _general_power(values[i], two_partial)
    return out


@_jit()
def multi_tensor_kernel_serial(
    addresses, chunks, s, raw_like, variant_tag, mode_tag, flag_tag, kind_tag
):
    """:func:`multi_tensor_kernel` on the calling thread, for work too small to share (and
    fewer chunks than threads, where waking idle threads costs milliseconds on a busy host)."""
    for c in range(chunks.shape[0]):
        k = chunks[c, 0]
        _chunk_loop(
            _pointer(addresses[k, 0], raw_like), _pointer(addresses[k, 1], raw_like),
            _pointer(addresses[k, 2], s), _pointer(addresses[k, 3], s),
            _pointer(addresses[k, 4], s), chunks[c, 1], chunks[c, 2], s,
            variant_tag, mode_tag, flag_tag, kind_tag,
        )  # fmt: skip


# ---- the non-finite guard: is every element of many arrays finite? ----------------------


@_jit()
def data_address(a):
    """The data address of one array (see :func:`addresses`)."""
    return _data_address(a)


@_jit()
def _largest_magnitude(bits, start, stop, mask):
    """max(bits[i] & mask) over [start, stop): the largest magnitude, as unsigned bits.

    An unsigned max reduction (no floating-point compare, no branch), so it vectorises; an
    element is inf or NaN exactly when its magnitude bits reach the all-ones exponent.
    """
    largest = mask ^ mask  # 0 of the bits' type
    for i in range(start, stop):
        magnitude = bits[i] & mask
        largest = magnitude if magnitude > largest else largest
    return largest


@_jit(parallel=True)
def all_finite_kernel(addresses, chunks, like, mask, limit):
    """Whether every element (unsigned bits of ``like``'s type) has ``bits & mask < limit``;
    addresses[k] is array k's data, chunks[c] = (k, start, stop) as in the step kernel."""
    largest = np.zeros(chunks.shape[0], dtype=like.dtype)
    for c in numba.prange(chunks.shape[0]):
        bits = _pointer(addresses[chunks[c, 0]], like)
        largest[c] = _largest_magnitude(bits, chunks[c, 1], chunks[c, 2], mask)
    return largest.max() < limit


@_jit()
def all_finite_kernel_serial(addresses, chunks, like, mask, limit):
    """:func:`all_finite_kernel` on the calling thread (stops at the first non-finite chunk)."""
    for c in range(chunks.shape[0]):
        bits = _pointer(addresses[chunks[c, 0]], like)
        if _largest_magnitude(bits, chunks[c, 1], chunks[c, 2], mask) >= limit:
            return False
    return True


# ---- step counts kept as scalars in memory (torch's 0-d ``step`` tensors) -----------------


@_jit()
def common_count(addresses, like):
    """The value every scalar at ``addresses`` (of ``like``'s dtype) holds, as a float64, or
    NaN where they differ (or there are none): one pass instead of a host read per count."""
    if addresses.shape[0] == 0:
        return np.nan
    first = np.float64(_pointer(addresses[0], like)[0])
    for k in range(1, addresses.shape[0]):
        if np.float64(_pointer(addresses[k], like)[0]) != first:
            return np.nan
    return first


@_jit()
def increment_counts(addresses, like):
    """Add 1 to every scalar at ``addresses``: for float32 the sum is exact in float64 and is
    rounded once on the store, so the bits are those of a float32 ``count + 1``."""
    for k in range(addresses.shape[0]):
        count = _pointer(addresses[k], like)
        count[0] = count[0] + 1.0
