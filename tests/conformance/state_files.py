"""Malformed state files, made from a good one, for every adapter's all-or-nothing load tests.

:func:`malformed_files` returns (expected message, path) pairs: another model's file (fewer
parameters, other shapes, other dtypes), another variant or amsgrad, truncated files, flipped
bytes in the header and in the data, NaN/Inf/negative entries, bad steps, another version or
format. Files that must pass the checksum to reach a later check are rewritten with a valid one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from padam_core import state_file

Tensors = dict[str, np.ndarray]
Metadata = dict[str, str]


def read_raw(path: Path) -> tuple[Tensors, Metadata]:
    return state_file._parse(Path(path).read_bytes())


def write_raw(path: Path, tensors: Tensors, metadata: Metadata) -> Path:
    """A safetensors file with a valid checksum for ``tensors`` and ``metadata``."""
    from safetensors.numpy import save_file

    metadata = {**metadata, "sha256": state_file._checksum(tensors, metadata)}
    save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, str(path), metadata)
    return path


def _drop_last_parameter(tensors: Tensors, metadata: Metadata) -> tuple[Tensors, Metadata]:
    import json

    last = int(metadata["count"]) - 1
    kept = {k: v for k, v in tensors.items() if not k.startswith(f"state/{last}/")}
    names = json.loads(metadata["names"])[:last]
    return kept, {**metadata, "count": str(last), "names": json.dumps(names)}


def _map_parameter(index: int, function: Callable[[np.ndarray], np.ndarray]):
    def edit(tensors: Tensors, metadata: Metadata) -> tuple[Tensors, Metadata]:
        prefix = f"state/{index}/"
        return {k: function(v) if k.startswith(prefix) else v for k, v in tensors.items()}, metadata

    return edit


def _set(key: str, value: np.ndarray):
    def edit(tensors: Tensors, metadata: Metadata) -> tuple[Tensors, Metadata]:
        return {**tensors, key: value}, metadata

    return edit


def _fill(key: str, value: float):
    def edit(tensors: Tensors, metadata: Metadata) -> tuple[Tensors, Metadata]:
        array = tensors[key].copy()
        array.reshape(-1)[0] = value
        return {**tensors, key: array}, metadata

    return edit


def _meta(**changes: str):
    def edit(tensors: Tensors, metadata: Metadata) -> tuple[Tensors, Metadata]:
        return tensors, {**metadata, **changes}

    return edit


def _no_v_hat(tensors: Tensors, metadata: Metadata) -> tuple[Tensors, Metadata]:
    kept = {k: v for k, v in tensors.items() if not k.endswith("/max_exp_avg_sq")}
    return kept, {**metadata, "amsgrad": "false"}


def _other_dtype(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32 if array.dtype == np.float64 else np.float64)


def malformed_files(good: Path, directory: Path, *, variant: str) -> list[tuple[str, Path]]:
    """Bad variants of ``good`` (written with amsgrad=True by an optimizer of ``variant``)."""
    tensors, metadata = read_raw(good)
    assert metadata["amsgrad"] == "true", "the malformed set starts from an amsgrad file"
    count = int(metadata["count"])
    other_variant = "reference" if variant == "optax" else "optax"
    edits = [
        (f"holds state for {count - 1} parameters", _drop_last_parameter),
        ("has shape", _map_parameter(0, lambda a: a.reshape((*a.shape, 1)))),
        ("and dtype float", _map_parameter(count - 1, _other_dtype)),
        ("v_hat is the max", _meta(variant=other_variant)),
        ("written with amsgrad=False", _no_v_hat),
        ("NaN or Inf", _fill("state/0/exp_avg", np.nan)),
        ("NaN or Inf", _fill(f"state/{count - 1}/exp_avg_sq", np.inf)),
        ("negative values", _fill("state/0/exp_avg_sq", -1.0)),
        ("negative values", _fill(f"state/{count - 1}/max_exp_avg_sq", -1e-30)),
        ("step must be an integer >= 0", _set("step", np.asarray(-1, np.int64))),
        ("step must be an int64 scalar", _set("step", np.asarray(3.0))),
        ("format version '2'", _meta(format_version="2")),
        ("not a padam.state file", _meta(format="padam_core.Padam")),
        ("unexpected", _set("state/0/extra", np.zeros(1, np.float32))),
    ]
    cases = []
    for number, (message, edit) in enumerate(edits):
        cases.append(
            (message, write_raw(directory / f"bad{number}.safetensors", *edit(tensors, metadata)))
        )
    data = Path(good).read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    raw = {
        "truncated": [data[:-7], data[: header_end + 3], data[: header_end - 20], data[:5]],
        "": [],
    }
    for position in np.linspace(0, header_end - 1, 24).astype(int):
        flipped = bytearray(data)
        flipped[position] ^= 0x01  # keeps ASCII: a digit, a name or a brace changes
        raw[""].append(bytes(flipped))
    flipped = bytearray(data)
    flipped[-1] ^= 0x01
    raw["checksum"] = [bytes(flipped)]
    for message, contents in raw.items():
        for number, content in enumerate(contents):
            path = directory / f"raw_{message or 'header'}{number}.safetensors"
            path.write_bytes(content)
            cases.append((message, path))
    return cases
