"""Optimizer state <-> a flat ``{tree path: numpy array}`` dict, for checkpoints without pickle.

``np.savez(path, **state_to_arrays(state))`` writes any optax state (Padam's or a chain's);
``state_from_arrays(np.load(path, allow_pickle=False), like=optimizer.init(params))`` reads it
back into the structure of ``like`` after checking every key, shape, dtype and value, so a
checkpoint of another model or optimizer raises a clear ``ValueError`` instead of training on
garbage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["state_from_arrays", "state_to_arrays"]

#: The entry naming the state's NamedTuple types, so e.g. an ``optax.amsgrad`` state (same field
#: names as Padam's, but ``nu_max`` holds another quantity) is not read as a Padam state.
TYPES_KEY = "__state_types__"
_SQUARES = ("nu", "nu_max")  # second moments: never negative


def _state_types(state: Any) -> list[str]:
    """The NamedTuple type names of ``state``, depth first."""
    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            names.append(type(node).__name__)
        if isinstance(node, (tuple, list)):
            for item in node:
                visit(item)
        elif isinstance(node, Mapping):
            for key in sorted(node, key=repr):
                visit(node[key])

    visit(state)
    return names


def state_to_arrays(state: Any) -> dict[str, np.ndarray]:
    """The leaves of ``state`` as host NumPy arrays keyed by their tree path (``.mu['w']``),
    plus a small ``__state_types__`` entry naming the state's types."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    arrays = {jax.tree_util.keystr(path): np.array(leaf) for path, leaf in leaves}
    types = json.dumps(_state_types(state)).encode()
    arrays[TYPES_KEY] = np.frombuffer(types, dtype=np.uint8).copy()
    return arrays


def _check_values(key: str, path: Any, value: np.ndarray) -> None:
    names = {getattr(entry, "name", None) for entry in path}
    if value.dtype.kind in "iu" and value.size and int(value.min()) < 0:
        raise ValueError(f"Checkpoint entry {key} holds negative values (a step count)")
    if value.dtype.kind in "fc" or value.dtype.kind == "V":
        real = value.astype(np.float64) if value.dtype.kind == "V" else value
        if not np.isfinite(real).all():
            raise ValueError(f"Checkpoint entry {key} holds NaN or Inf")
        if names & set(_SQUARES) and value.dtype.kind != "c" and (real < 0).any():
            raise ValueError(f"Checkpoint entry {key} holds negative values (a second moment)")


def state_from_arrays(arrays: Mapping[str, Any], *, like: Any) -> Any:
    """Rebuild a state from :func:`state_to_arrays` output, in the structure of ``like``.

    ``like`` is a state of the same optimizer and parameters (``optimizer.init(params)``, or
    ``jax.eval_shape(optimizer.init, params)``); each restored leaf takes the sharding of the
    matching leaf of ``like`` when it has one. ``jax.eval_shape`` keeps shardings only on a
    ``jax.make_mesh`` mesh (restore inside ``jax.set_mesh(mesh)``); on a ``Mesh`` built by hand
    its leaves carry none and the arrays land on the default device: pass
    ``like=optimizer.init(params)`` to keep sharded placements. Raises ``ValueError`` for a
    missing or extra key, a shape or dtype that differs from ``like`` (structured dtypes are
    refused), values no optimizer reaches (NaN or Inf, negative counts or second moments), or a
    checkpoint of another optimizer's state types (e.g. ``optax.amsgrad``). Every array is
    copied.
    """
    treedef: Any  # jaxlib ships no stub for PyTreeDef (flatten_up_to, unflatten)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    if TYPES_KEY in arrays:
        try:
            stored_types = json.loads(np.asarray(arrays[TYPES_KEY]).tobytes().decode())
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"Checkpoint entry {TYPES_KEY} is unreadable: {error}") from None
        if stored_types != _state_types(like):
            raise ValueError(
                f"Checkpoint holds a state of types {stored_types}, the optimizer's state has "
                f"types {_state_types(like)}"
            )
    expected = [jax.tree_util.keystr(path) for path, _ in leaves]
    missing = [key for key in expected if key not in arrays]
    extra = sorted(set(arrays) - set(expected) - {TYPES_KEY})
    if missing or extra:
        raise ValueError(
            f"Checkpoint does not match the optimizer state: missing {missing}, unexpected {extra}"
        )
    restored = []
    for key, (path, template) in zip(expected, leaves, strict=True):
        value = np.array(arrays[key])  # a copy, never the caller's buffer
        dtype = np.dtype(template.dtype)
        if value.dtype.fields is not None:
            raise ValueError(f"Checkpoint entry {key} has a structured dtype {value.dtype}")
        if (
            value.dtype.kind == "V"
            and dtype.kind == "V"
            and dtype.fields is None
            and value.dtype.itemsize == dtype.itemsize
        ):
            value = value.view(dtype)  # np.save writes ml_dtypes' bfloat16 as raw bytes
        if value.shape != tuple(template.shape) or value.dtype != dtype:
            raise ValueError(
                f"Checkpoint entry {key} has shape {value.shape} and dtype {value.dtype}, "
                f"expected {tuple(template.shape)} and {dtype}"
            )
        _check_values(key, path, value)
        sharding = _concrete_sharding(getattr(template, "sharding", None), key)
        restored.append(jax.device_put(value, sharding) if sharding else jnp.asarray(value))
    return treedef.unflatten(restored)


def _concrete_sharding(sharding: Any, key: str) -> Any:
    """A sharding ``device_put`` can use. ``jax.eval_shape`` of parameters on a ``jax.make_mesh``
    mesh gives shardings over an *abstract* mesh (no devices): they are made concrete with the
    mesh set by ``jax.set_mesh``, or refused with what to do."""
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not isinstance(mesh, jax.sharding.AbstractMesh):
        return sharding
    concrete = jax.sharding.get_mesh()
    if concrete is None or getattr(concrete, "empty", True) or concrete.shape != mesh.shape:
        raise ValueError(
            f"Checkpoint entry {key}: `like` holds a sharding over an abstract mesh {mesh} "
            "(jax.eval_shape of parameters on a jax.make_mesh mesh); restore inside "
            "`with jax.set_mesh(mesh):` or pass like=optimizer.init(params)"
        )
    return jax.sharding.NamedSharding(concrete, sharding.spec)
