"""Padam's state file: one pickle-free, versioned safetensors file every adapter reads and writes.

The format (``padam.state`` version 1) is described in ``docs/state-format.md``; in short, for
parameters numbered 0..n-1 in the order of their framework (torch: the parameters of every
param group in turn; JAX: ``jax.tree_util`` flatten order; Keras: the optimizer's variable
order) the file holds

=============================  =========================  ===================================
tensor                         dtype                      meaning
=============================  =========================  ===================================
``step``                       int64, shape ()            t, the number of steps taken
``state/<i>/exp_avg``          float16/bfloat16/32/64     m of parameter i
``state/<i>/exp_avg_sq``       float16/bfloat16/32/64     v of parameter i (>= 0)
``state/<i>/max_exp_avg_sq``   as exp_avg_sq              v_hat (>= 0), only with amsgrad
=============================  =========================  ===================================

and string metadata: ``format``, ``format_version``, ``count`` (n), ``names`` (JSON list, for
error messages), ``variant``, ``amsgrad`` (``"true"``/``"false"``), ``hyperparameters`` (JSON,
recorded only), ``writer`` and ``sha256`` (of every tensor and the rest of the metadata).

:func:`read_state_file` checks everything before it returns, so an adapter that calls it before
assigning anything applies a file all or nothing. Checked: the file is complete and its header
well formed (every byte accounted for), format and version, the checksum, the number of
parameters, every shape and dtype against the caller's, finite values, v and v_hat >= 0, an
integer step >= 0, amsgrad (whether v_hat is there) and, with amsgrad, the meaning of v_hat:
the ``optax`` variant keeps the running max of v / bc2, ``reference`` and ``torch`` that of v,
so those two read each other's files. Recorded, not checked: the names, the other
hyperparameters (lr, b1, b2, eps, partial, weight decay: changing them on resume is allowed, as
with any checkpoint) and the writer.

This module imports NumPy, safetensors' writer and (for bfloat16) ml_dtypes, no framework.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from padam_core.hyperparameters import VARIANTS

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MOMENTS",
    "StateFile",
    "TensorSpec",
    "numpy_dtype",
    "read_state_file",
    "write_state_file",
]

FORMAT = "padam.state"
FORMAT_VERSION = 1
#: State tensors per parameter, torch's names (m, v, v_hat).
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

# safetensors dtype tag -> NumPy dtype name; the only dtypes a state file holds.
_TAGS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I64": "int64"}
_STATE_DTYPES = ("float16", "bfloat16", "float32", "float64")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def numpy_dtype(name: Any) -> np.dtype:
    """The NumPy dtype for a dtype or its name, ``bfloat16`` included (from ml_dtypes)."""
    if str(name) == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclass(frozen=True)
class TensorSpec:
    """What the reader expects for one parameter's state: its shape and the state dtypes.

    ``dtype`` is the dtype of v and v_hat; ``exp_avg_dtype`` that of m when it differs (optax's
    ``mu_dtype``), else None.
    """

    name: str
    shape: tuple[int, ...]
    dtype: Any
    exp_avg_dtype: Any = None

    def dtype_of(self, moment: str) -> np.dtype:
        chosen = self.exp_avg_dtype if moment == "exp_avg" and self.exp_avg_dtype else self.dtype
        return numpy_dtype(chosen)


@dataclass(frozen=True)
class StateFile:
    """A checked state file: one list entry per parameter, in file order."""

    step: int
    exp_avg: list[np.ndarray]
    exp_avg_sq: list[np.ndarray]
    max_exp_avg_sq: list[np.ndarray] | None
    names: list[str]
    variant: str
    amsgrad: bool
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    writer: str = ""


def _v_hat_meaning(variant: str) -> str:
    return "max of v / (1 - b2^t)" if variant == "optax" else "max of v"


def _checksum(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """sha256 of every tensor (key, dtype, shape, bytes; sorted by key) and of the metadata but
    this checksum, so a flipped byte anywhere in the file is found."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.asarray(arrays[key])
        digest.update(json.dumps([key, array.dtype.name, list(array.shape)]).encode())
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    rest = {key: value for key, value in metadata.items() if key != "sha256"}
    digest.update(json.dumps(rest, sort_keys=True).encode())
    return digest.hexdigest()


def _check_values(key: str, value: np.ndarray) -> str | None:
    """The problem with a state tensor's values, or None."""
    if not np.isfinite(value).all():
        return f"{key} holds NaN or Inf"
    if not key.endswith("/exp_avg") and (value < 0).any():
        return f"{key} holds negative values (a second moment is >= 0)"
    return None


def _check_state(
    step: Any, moments: Mapping[str, Sequence[np.ndarray] | None], count: int
) -> str | None:
    """The first problem with a state's step and tensors (shapes, dtypes, values), or None."""
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
        return f"step must be an integer >= 0, got {step!r}"
    for moment, arrays in moments.items():
        if arrays is not None and len(arrays) != count:
            return f"{len(arrays)} {moment} tensors for {count} parameters"
    first, second = moments["exp_avg"], moments["exp_avg_sq"]
    assert first is not None and second is not None  # only max_exp_avg_sq may be absent
    for index in range(count):
        shape = first[index].shape
        for moment, arrays in moments.items():
            if arrays is None:
                continue
            key, value = f"state/{index}/{moment}", arrays[index]
            if value.dtype.name not in _STATE_DTYPES:
                return f"{key} has dtype {value.dtype}, expected one of {_STATE_DTYPES}"
            if value.shape != shape:
                return f"{key} has shape {value.shape}, exp_avg has {shape}"
            if moment == "max_exp_avg_sq" and value.dtype != second[index].dtype:
                return f"{key} has dtype {value.dtype}, exp_avg_sq has another"
            problem = _check_values(key, value)
            if problem:
                return problem
    return None


def write_state_file(
    path: str | os.PathLike[str],
    *,
    step: int,
    exp_avg: Sequence[np.ndarray],
    exp_avg_sq: Sequence[np.ndarray],
    max_exp_avg_sq: Sequence[np.ndarray] | None,
    names: Sequence[str],
    variant: str,
    amsgrad: bool,
    hyperparameters: Mapping[str, Any] | None = None,
    writer: str = "",
) -> None:
    """Write a state file atomically: ``path`` holds the old file or the whole new one.

    The state is checked by the reader's rules first (``ValueError``), so a file this writes is
    one :func:`read_state_file` accepts. Arrays are NumPy (bfloat16 from ml_dtypes).
    """
    path = Path(path)
    if variant not in VARIANTS:
        raise ValueError(f"Invalid variant value: {variant!r} (expected one of {VARIANTS})")
    if amsgrad != (max_exp_avg_sq is not None):
        raise ValueError("max_exp_avg_sq must be given exactly when amsgrad=True")
    first = [np.asarray(a) for a in exp_avg]
    moments: dict[str, list[np.ndarray] | None] = {
        "exp_avg": first,
        "exp_avg_sq": [np.asarray(a) for a in exp_avg_sq],
        "max_exp_avg_sq": None
        if max_exp_avg_sq is None
        else [np.asarray(a) for a in max_exp_avg_sq],
    }
    if len(names) != len(first):
        raise ValueError(f"{len(names)} names for {len(first)} parameters")
    problem = _check_state(step, moments, len(names))
    if problem:
        raise ValueError(f"Cannot write Padam state to '{path}': {problem}")

    tensors = {"step": np.asarray(int(step), dtype=np.int64)}
    for moment, arrays in moments.items():
        for index, array in enumerate(arrays or ()):
            # asarray(order="C"), not ascontiguousarray: the latter turns 0-d arrays into 1-d.
            tensors[f"state/{index}/{moment}"] = np.asarray(array, order="C")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "count": str(len(names)),
        "names": json.dumps([str(name) for name in names]),
        "variant": variant,
        "amsgrad": "true" if amsgrad else "false",
        "hyperparameters": json.dumps(dict(hyperparameters or {}), default=repr),
        "writer": writer,
    }
    metadata["sha256"] = _checksum(tensors, metadata)
    _write_atomically(path, tensors, metadata)


def _write_atomically(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    # A unique temporary file in the target's directory (so os.replace is a rename on one file
    # system), flushed to disk before it replaces the target; removed if anything fails.
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        os.close(descriptor)
        save_file(tensors, temporary, metadata)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename itself, where a directory can be opened
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _parse(data: bytes | mmap.mmap) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors buffer; ``ValueError`` saying what is wrong.

    Stricter than safetensors' own reader: every data byte belongs to exactly one tensor, so a
    truncated or extended file is refused, and bfloat16 reads as ml_dtypes' bfloat16.
    """
    if len(data) < 8:
        raise ValueError(f"the file has {len(data)} bytes, too short for a header (truncated)")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError(
            f"the header claims {header_size} bytes, the file has {len(data)} (truncated or "
            "corrupted)"
        )
    try:
        header = json.loads(data[8 : 8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"the header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError("the metadata is not a dict of strings")
    buffer = memoryview(data)[8 + header_size :]
    arrays, spans = {}, []
    for key, entry in header.items():
        try:
            tag, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            shape = tuple(int(n) for n in shape)
            start, end = int(start), int(end)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"the header entry {key!r} is malformed: {entry!r}") from None
        if tag not in _TAGS:
            raise ValueError(f"tensor {key!r} has dtype {tag}, not one of {sorted(_TAGS)}")
        dtype = numpy_dtype(_TAGS[tag])
        size = math.prod(shape) * dtype.itemsize
        if min(shape, default=0) < 0 or not 0 <= start <= end <= len(buffer) or end - start != size:
            raise ValueError(
                f"tensor {key!r} (shape {shape}, {tag}) claims bytes {start}..{end} of a "
                f"{len(buffer)}-byte data section (truncated or corrupted)"
            )
        spans.append((start, end))
        # A copy: the caller may write into it (safetensors data is little-endian, as this host).
        arrays[key] = np.frombuffer(buffer[start:end], dtype=dtype).reshape(shape).copy()
    position = 0
    for start, end in sorted(spans):
        if start != position:
            break
        position = end
    if position != len(buffer):
        raise ValueError(
            f"the tensors do not cover the {len(buffer)}-byte data section exactly "
            "(truncated, extended or corrupted file)"
        )
    return arrays, metadata


def read_state_file(
    path: str | os.PathLike[str],
    *,
    expected: Sequence[TensorSpec] | None,
    variant: str | None,
    amsgrad: bool | None,
) -> StateFile:
    """Read and check a state file against the caller's parameters and hyperparameters.

    ``expected`` lists, in order, each parameter's shape and state dtypes; ``variant`` and
    ``amsgrad`` are the reading optimizer's. ``None`` skips that check (to inspect a file).
    Any problem raises ``ValueError`` naming the file and the problem; a missing file raises
    ``FileNotFoundError``.
    """
    path = Path(path)
    try:
        return _read(path, expected=expected, variant=variant, amsgrad=amsgrad)
    except _ProblemError as problem:
        raise ValueError(f"Cannot read Padam state from '{path}': {problem}") from None


class _ProblemError(Exception):
    pass


def _read(
    path: Path,
    *,
    expected: Sequence[TensorSpec] | None,
    variant: str | None,
    amsgrad: bool | None,
) -> StateFile:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        # Mapped, not read: the tensors are copied out once, so the file is never in memory twice.
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            arrays, metadata = _parse(data)
        except ValueError as error:
            raise _ProblemError(str(error)) from None
        finally:
            if isinstance(data, mmap.mmap):
                # An error's traceback may still hold a view of the map: then the GC closes it.
                with contextlib.suppress(BufferError):
                    data.close()
    if metadata.get("format") != FORMAT:
        raise _ProblemError(f"not a {FORMAT} file (format {metadata.get('format')!r})")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise _ProblemError(
            f"format version {metadata.get('format_version')!r}; this reader reads version "
            f"{FORMAT_VERSION} only"
        )
    if metadata.get("sha256") != _checksum(arrays, metadata):
        raise _ProblemError("the checksum does not match the tensors (corrupted file)")
    try:
        count = int(metadata["count"])
        names = json.loads(metadata["names"])
        hyperparameters = json.loads(metadata.get("hyperparameters", "{}"))
        file_variant, file_amsgrad = (
            metadata["variant"],
            {"true": True, "false": False}[metadata["amsgrad"]],
        )
    except (KeyError, ValueError, TypeError) as error:
        raise _ProblemError(f"malformed metadata ({type(error).__name__}: {error})") from None
    if not isinstance(names, list) or len(names) != count or file_variant not in VARIANTS:
        raise _ProblemError(
            f"malformed metadata: count {count}, names {names}, variant {file_variant}"
        )
    names = [str(name) for name in names]

    def name_of(index: int) -> str:
        here = f", here {expected[index].name!r}" if expected is not None else ""
        return f"parameter {index} (in the file {names[index]!r}{here})"

    if expected is not None and len(expected) != count:
        raise _ProblemError(
            f"the file holds state for {count} parameters, the optimizer has {len(expected)} "
            f"(the file's: {names[:8]}{' ...' if count > 8 else ''})"
        )
    if amsgrad is not None and amsgrad != file_amsgrad:
        raise _ProblemError(
            f"the file was written with amsgrad={file_amsgrad}, the optimizer has "
            f"amsgrad={amsgrad} (v_hat {'would be lost' if file_amsgrad else 'is missing'})"
        )
    if (
        variant is not None
        and file_amsgrad
        and _v_hat_meaning(variant) != _v_hat_meaning(file_variant)
    ):
        raise _ProblemError(
            f"the file's v_hat is the {_v_hat_meaning(file_variant)} (variant {file_variant!r}); "
            f"variant {variant!r} keeps the {_v_hat_meaning(variant)}"
        )
    moment_names = MOMENTS if file_amsgrad else MOMENTS[:2]
    wanted = {"step"} | {f"state/{i}/{m}" for i in range(count) for m in moment_names}
    if set(arrays) != wanted:
        missing, extra = sorted(wanted - set(arrays))[:8], sorted(set(arrays) - wanted)[:8]
        raise _ProblemError(
            f"tensors do not match the metadata: missing {missing}, unexpected {extra}"
        )
    step_array = arrays["step"]
    if step_array.shape != () or step_array.dtype != np.int64:
        raise _ProblemError(
            f"step must be an int64 scalar, got {step_array.dtype} {step_array.shape}"
        )
    step = int(step_array)
    present: dict[str, list[np.ndarray]] = {
        moment: [arrays[f"state/{i}/{moment}"] for i in range(count)] for moment in moment_names
    }
    if expected is not None:
        for index, spec in enumerate(expected):
            for moment in moment_names:
                value, dtype = present[moment][index], spec.dtype_of(moment)
                if value.shape != tuple(spec.shape) or value.dtype != dtype:
                    raise _ProblemError(
                        f"{moment} of {name_of(index)} has shape {value.shape} and dtype "
                        f"{value.dtype}, expected {tuple(spec.shape)} and {dtype}"
                    )
    moments: dict[str, list[np.ndarray] | None] = {"max_exp_avg_sq": None, **present}
    problem = _check_state(step, moments, count)
    if problem:
        raise _ProblemError(problem)
    return StateFile(
        step=step,
        exp_avg=present["exp_avg"],
        exp_avg_sq=present["exp_avg_sq"],
        max_exp_avg_sq=moments["max_exp_avg_sq"],
        names=names,
        variant=file_variant,
        amsgrad=file_amsgrad,
        hyperparameters=hyperparameters if isinstance(hyperparameters, dict) else {},
        writer=metadata.get("writer", ""),
    )
