"""Reading and writing flat dicts of NumPy arrays without pickle (``.npz`` or ``.safetensors``).

A small metadata dict of strings travels with the arrays: inside ``.npz`` as a JSON document in
a ``uint8`` entry, inside ``.safetensors`` as its own metadata. Loading never unpickles
(``allow_pickle=False``), and any unreadable file raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["load_arrays", "save_arrays"]

_META_KEY = "__padam_meta__"


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def save_arrays(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]
) -> None:
    """Write ``arrays`` and ``meta`` to ``path``; the format follows the file's suffix."""
    path = Path(path)
    if _META_KEY in arrays:
        raise ValueError(f"{_META_KEY!r} is reserved for metadata")
    # Write next to the target, then rename: a crash mid-write never leaves a half file behind.
    partial_path = path.with_name(path.name + ".tmp")
    if _is_safetensors(path):
        from safetensors.numpy import save_file

        # asarray(order="C"), not ascontiguousarray: the latter turns 0-d arrays into 1-d.
        contiguous = {key: np.asarray(value, order="C") for key, value in arrays.items()}
        save_file(contiguous, partial_path, dict(meta))
    else:
        meta_bytes = np.frombuffer(json.dumps(dict(meta)).encode(), dtype=np.uint8)
        with open(partial_path, "wb") as handle:
            np.savez(handle, **arrays, **{_META_KEY: meta_bytes})
    os.replace(partial_path, path)


def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read what :func:`save_arrays` wrote; ``ValueError`` if the file cannot be read."""
    path = Path(path)
    try:
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(path, framework="np") as handle:
                meta = dict(handle.metadata() or {})
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            return arrays, meta
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
