"""Reading and writing flat dicts of NumPy arrays without pickle (``.npz`` or ``.safetensors``).

A small metadata dict of strings travels with the arrays: inside ``.npz`` as a JSON document in
a ``uint8`` entry, inside ``.safetensors`` as its own metadata. Loading never unpickles
(``allow_pickle=False``), and any unreadable file raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["load_arrays", "save_arrays"]

_META_KEY = "__padam_meta__"
_MAX_META_BYTES = 1 << 20  # the JSON metadata document
_MAX_NPY_HEADER = 1 << 16  # an .npy header is at most 64 KiB (format version 2+ allows more)
_MAX_UNCHECKED_BYTES = 1 << 32  # without expected sizes: 4 GiB in all


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write`` into a new temporary file next to ``path``, then rename it.

    The temporary name is unique (``tempfile.mkstemp``, created with ``O_EXCL``: a planted
    symlink is never followed and concurrent saves never share a file); the data is fsynced
    before the rename and the directory after it; on any failure the temporary file is removed.
    """
    directory = path.parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory
        directory_descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)


def save_arrays(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]
) -> None:
    """Write ``arrays`` and ``meta`` to ``path``; the format follows the file's suffix."""
    path = Path(path)
    if _META_KEY in arrays:
        raise ValueError(f"{_META_KEY!r} is reserved for metadata")
    if _is_safetensors(path):
        from safetensors.numpy import save

        # asarray(order="C"), not ascontiguousarray: the latter turns 0-d arrays into 1-d.
        contiguous = {key: np.asarray(value, order="C") for key, value in arrays.items()}
        data = save(contiguous, dict(meta))
        _write_atomically(path, lambda handle: handle.write(data))
    else:
        meta_bytes = np.frombuffer(json.dumps(dict(meta)).encode(), dtype=np.uint8)
        _write_atomically(
            path,
            lambda handle: np.savez(
                handle, allow_pickle=False, **arrays, **{_META_KEY: meta_bytes}
            ),
        )


def _check_npz_directory(path: Path, expected: Mapping[str, int] | None) -> None:
    """Check entry names and sizes from the zip directory, before anything is inflated.

    ``expected`` maps each array name to its size in bytes; an entry may be larger only by an
    ``.npy`` header. Without ``expected`` only names and the total size are bounded.
    """
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise ValueError("the archive holds an entry name twice")
    keys = []
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise ValueError(f"unexpected entry {info.filename!r} (expected .npy entries only)")
        keys.append(info.filename[: -len(".npy")])
    if expected is None:
        total = sum(info.file_size for info in infos)
        if total > _MAX_UNCHECKED_BYTES:
            raise ValueError(f"the archive inflates to {total} bytes (more than allowed)")
        return
    allowed = {**expected, _META_KEY: _MAX_META_BYTES}
    unexpected = sorted(set(keys) - set(allowed))
    if unexpected:
        raise ValueError(f"unexpected entries {unexpected}")
    for key, info in zip(keys, infos, strict=True):
        if info.file_size > allowed[key] + _MAX_NPY_HEADER:
            raise ValueError(
                f"entry {key!r} inflates to {info.file_size} bytes, "
                f"expected at most {allowed[key] + _MAX_NPY_HEADER}"
            )


def load_arrays(
    path: str | os.PathLike[str], *, expected: Mapping[str, int] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read what :func:`save_arrays` wrote; ``ValueError`` if the file cannot be read.

    ``expected`` (array name -> size in bytes) bounds what an ``.npz`` may inflate to: names
    and sizes are checked from the zip directory before any entry is read.
    """
    path = Path(path)
    try:
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(path, framework="np") as handle:
                meta = dict(handle.metadata() or {})
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            return arrays, meta
        _check_npz_directory(path, expected)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta_bytes = arrays.pop(_META_KEY, None)
        meta = json.loads(meta_bytes.tobytes().decode()) if meta_bytes is not None else {}
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        return arrays, meta
    except FileNotFoundError:
        raise
    except Exception as error:  # zipfile, pickle refusal, JSON, safetensors header errors, ...
        raise ValueError(f"Cannot read Padam state from '{path}': {error}") from error
