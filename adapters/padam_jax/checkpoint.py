"""Optimizer state <-> a flat ``{tree path: numpy array}`` dict, for checkpoints without pickle.

``np.savez(path, **state_to_arrays(state))`` writes any optax state (Padam's or a chain's);
``state_from_arrays(np.load(path, allow_pickle=False), like=optimizer.init(params))`` reads it
back into the structure of ``like`` after checking every key, shape and dtype, so a checkpoint
of another model or optimizer raises a clear ``ValueError`` instead of training on garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["state_from_arrays", "state_to_arrays"]


def state_to_arrays(state: Any) -> dict[str, np.ndarray]:
    """The leaves of ``state`` as host NumPy arrays keyed by their tree path (``.mu['w']``)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def state_from_arrays(arrays: Mapping[str, Any], *, like: Any) -> Any:
    """Rebuild a state from :func:`state_to_arrays` output, in the structure of ``like``.

    ``like`` is a state of the same optimizer and parameters (``optimizer.init(params)``, or
    ``jax.eval_shape(optimizer.init, params)``); each restored leaf takes the sharding of the
    matching leaf of ``like`` when it has one. Raises ``ValueError`` for a missing or extra key
    or a shape or dtype that differs from ``like``.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    expected = [jax.tree_util.keystr(path) for path, _ in leaves]
    missing = [key for key in expected if key not in arrays]
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(
            f"Checkpoint does not match the optimizer state: missing {missing}, unexpected {extra}"
        )
    restored = []
    for key, (_, template) in zip(expected, leaves, strict=True):
        value = np.asarray(arrays[key])
        dtype = np.dtype(template.dtype)
        if value.dtype.kind == "V" and value.dtype.itemsize == dtype.itemsize:
            value = value.view(dtype)  # np.save writes ml_dtypes' bfloat16 as raw bytes
        if value.shape != tuple(template.shape) or value.dtype != dtype:
            raise ValueError(
                f"Checkpoint entry {key} has shape {value.shape} and dtype {value.dtype}, "
                f"expected {tuple(template.shape)} and {dtype}"
            )
        sharding = getattr(template, "sharding", None)
        restored.append(jax.device_put(value, sharding) if sharding else jnp.asarray(value))
    return treedef.unflatten(restored)
