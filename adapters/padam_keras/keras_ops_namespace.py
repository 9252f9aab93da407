"""The padam_core kernel's namespace contract, implemented with ``keras.ops``.

array-api-compat covers NumPy, CuPy, torch and JAX but not TensorFlow, so on Keras's TensorFlow
backend the optimizer passes this module as ``xp=`` to :func:`padam_core.padam_step`. It exposes
exactly the functions the kernel's module docstring lists (``asarray``, ``astype``, ``sqrt``,
``pow``, ``exp``, ``log``, ``where``, ``maximum``, ``clip``, ``expm1``, ``real``, ``imag``,
``isdtype`` and the dtype objects), those :mod:`padam_core.schedules` uses on a tensor step
count (``clip``, ``where``, ``cos``) and those of :func:`padam_core.all_finite` (``all``,
``isfinite``, ``logical_and``), on top of ``keras.ops``, so it works on any Keras backend; the
tests run the kernel through it on all three.

The dtype objects are the backend's own (``tf.float32`` on TensorFlow, found by converting a
scalar), because the kernel compares ``array.dtype == xp.float16``.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

__all__ = [
    "all",
    "asarray",
    "astype",
    "bfloat16",
    "clip",
    "complex64",
    "complex128",
    "cos",
    "exp",
    "expm1",
    "float16",
    "float32",
    "float64",
    "imag",
    "isdtype",
    "isfinite",
    "log",
    "logical_and",
    "maximum",
    "pow",
    "real",
    "sqrt",
    "where",
]


def _native_dtype(name: str) -> Any:
    """The backend's dtype object for ``name`` (e.g. ``tf.float16``), or ``None`` if it lacks it
    (JAX without x64 silently gives float32 for float64: that counts as lacking it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dtype = ops.convert_to_tensor(0, dtype=name).dtype
        except (TypeError, ValueError):  # pragma: no cover - every Keras 3 backend has these
            return None
    return dtype if keras.backend.standardize_dtype(dtype) == name else None


float16 = _native_dtype("float16")
bfloat16 = _native_dtype("bfloat16")
float32 = _native_dtype("float32")
float64 = _native_dtype("float64")
complex64 = _native_dtype("complex64")
complex128 = _native_dtype("complex128")

# The array API's kinds, spelled with Keras's standardized dtype names.
_KINDS: dict[str, tuple[str, ...]] = {
    "bool": ("bool",),
    "signed integer": ("int8", "int16", "int32", "int64"),
    "unsigned integer": ("uint8", "uint16", "uint32", "uint64"),
    "real floating": ("float16", "bfloat16", "float32", "float64"),
    "complex floating": ("complex64", "complex128"),
}
_KINDS["integral"] = _KINDS["signed integer"] + _KINDS["unsigned integer"]
_KINDS["numeric"] = _KINDS["integral"] + _KINDS["real floating"] + _KINDS["complex floating"]


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None) -> Any:
    """``keras.ops.convert_to_tensor``; ``device`` and ``copy`` are accepted and ignored
    (tensors here are immutable and created on the default device of the current scope)."""
    return ops.convert_to_tensor(obj, dtype=dtype)


def astype(x: Any, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Any:
    """``keras.ops.cast`` (immutable tensors, so ``copy`` makes no difference)."""
    return ops.cast(x, dtype)


def isdtype(dtype: Any, kind: str | Any | tuple[Any, ...]) -> bool:
    """The array API's ``isdtype`` over Keras's standardized dtype names."""
    name = keras.backend.standardize_dtype(dtype)
    if isinstance(kind, tuple):
        return any(isdtype(dtype, one) for one in kind)
    if isinstance(kind, str) and kind in _KINDS:
        return name in _KINDS[kind]
    return name == keras.backend.standardize_dtype(kind)


def sqrt(x: Any, /) -> Any:
    return ops.sqrt(x)


def pow(x1: Any, x2: Any, /) -> Any:
    return ops.power(x1, x2)


def maximum(x1: Any, x2: Any, /) -> Any:
    return ops.maximum(x1, x2)


def clip(x: Any, /, min: Any = None, max: Any = None) -> Any:
    if min is not None:
        x = ops.maximum(x, min)
    return x if max is None else ops.minimum(x, max)


def exp(x: Any, /) -> Any:
    return ops.exp(x)


def expm1(x: Any, /) -> Any:
    return ops.expm1(x)


def log(x: Any, /) -> Any:
    return ops.log(x)


def real(x: Any, /) -> Any:
    return ops.real(x)


def imag(x: Any, /) -> Any:
    return ops.imag(x)


def cos(x: Any, /) -> Any:
    return ops.cos(x)


def where(condition: Any, x1: Any, x2: Any, /) -> Any:
    return ops.where(condition, x1, x2)


def isfinite(x: Any, /) -> Any:
    return ops.isfinite(x)


def logical_and(x1: Any, x2: Any, /) -> Any:
    return ops.logical_and(x1, x2)


def all(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return ops.all(x, axis=axis, keepdims=keepdims)
