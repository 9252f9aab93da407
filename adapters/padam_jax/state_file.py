"""Save and load the Padam part of an optax state in the shared state file (safetensors).

The file (``docs/state-format.md``) is the one padam_torch, padam_keras and padam_core read, so a
run can move between frameworks. Parameters are matched by order: ``jax.tree_util`` flatten
order of the parameter tree. The state may be :func:`padam_jax.scale_by_padam`'s or any state
that holds exactly one (``padam``'s chain, ``inject_hyperparams``, ...); only that part is
written and replaced (``count``, ``mu``, ``nu``, ``nu_max``), the other transforms' states
(e.g. a schedule's count) stay as they are in ``like``.

The state does not say which ``variant`` made it: pass the optimizer's (default
``padam_core.DEFAULT_VARIANT``, ``"torch"``, as for :func:`padam_jax.padam`).

>>> import jax.numpy as jnp
>>> from padam_jax import load_state, padam, save_state
>>> optimizer = padam(learning_rate=0.1)
>>> state = optimizer.init({"w": jnp.ones(3)})
>>> save_state("/tmp/padam_jax_state.safetensors", state)
>>> state = load_state("/tmp/padam_jax_state.safetensors", like=state)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from padam_core.hyperparameters import DEFAULT_VARIANT
from padam_core.state_file import TensorSpec, read_state_file, write_state_file
from padam_jax.transform import ScaleByPadamState
from padam_jax.tree import find_one

__all__ = ["load_state", "save_state"]


def _is_padam_state(node: Any) -> bool:
    return isinstance(node, ScaleByPadamState)


def _padam_state(opt_state: Any) -> ScaleByPadamState:
    return find_one(opt_state, ScaleByPadamState, "scale_by_padam state")


def save_state(
    path: str | os.PathLike[str], opt_state: Any, *, variant: str = DEFAULT_VARIANT
) -> None:
    """Write the Padam state inside ``opt_state`` to ``path`` (atomically).

    Reads the arrays to the host (call it outside ``jit``). ``variant`` is the optimizer's.
    """
    state = _padam_state(opt_state)
    treedef: Any  # jaxlib ships no stub for PyTreeDef (flatten_up_to, unflatten)
    paths_and_mus, treedef = jax.tree_util.tree_flatten_with_path(state.mu)
    names = [jax.tree_util.keystr(path) or "<root>" for path, _ in paths_and_mus]
    nu_max = state.nu_max
    write_state_file(
        path,
        step=int(state.count),
        exp_avg=[np.asarray(mu) for _, mu in paths_and_mus],
        exp_avg_sq=[np.asarray(nu) for nu in treedef.flatten_up_to(state.nu)],
        max_exp_avg_sq=None if nu_max is None else [
            np.asarray(v) for v in treedef.flatten_up_to(nu_max)
        ],
        names=names,
        variant=variant,
        amsgrad=nu_max is not None,
        writer=f"padam_jax (jax {jax.__version__})",
    )  # fmt: skip


def load_state(path: str | os.PathLike[str], *, like: Any, variant: str = DEFAULT_VARIANT) -> Any:
    """``like`` with its Padam state replaced by the one in ``path``.

    ``like`` is a state of the same optimizer and parameters (``optimizer.init(params)``, or
    ``jax.eval_shape(optimizer.init, params)``); each array takes the sharding of the matching
    leaf of ``like`` when it has one. The file is checked in full first (count, shapes, dtypes,
    values, variant, amsgrad): a ``ValueError`` means nothing was built.
    """
    state = _padam_state(like)
    treedef: Any  # jaxlib ships no stub for PyTreeDef (flatten_up_to, unflatten)
    paths_and_mus, treedef = jax.tree_util.tree_flatten_with_path(state.mu)
    nus = treedef.flatten_up_to(state.nu)
    specs = [
        TensorSpec(jax.tree_util.keystr(path) or "<root>", tuple(mu.shape), np.dtype(nu.dtype),
                   np.dtype(mu.dtype))
        for (path, mu), nu in zip(paths_and_mus, nus, strict=True)
    ]  # fmt: skip
    loaded = read_state_file(path, expected=specs, variant=variant,
                             amsgrad=state.nu_max is not None)  # fmt: skip
    count_dtype = np.dtype(state.count.dtype)
    if loaded.step > np.iinfo(count_dtype).max:
        raise ValueError(
            f"Cannot read Padam state from '{path}': step {loaded.step} does not fit the "
            f"state's {count_dtype} count"
        )

    def put(value: np.ndarray, template: Any) -> jax.Array:
        sharding = getattr(template, "sharding", None)
        return jax.device_put(value, sharding) if sharding else jnp.asarray(value)

    def tree(arrays: list[np.ndarray], templates: list[Any]) -> Any:
        return treedef.unflatten([put(a, t) for a, t in zip(arrays, templates, strict=True)])

    replacement = ScaleByPadamState(
        count=put(np.asarray(loaded.step, dtype=count_dtype), state.count),
        mu=tree(loaded.exp_avg, [mu for _, mu in paths_and_mus]),
        nu=tree(loaded.exp_avg_sq, nus),
        nu_max=None
        if loaded.max_exp_avg_sq is None
        else tree(loaded.max_exp_avg_sq, treedef.flatten_up_to(state.nu_max)),
    )
    return jax.tree_util.tree_map(
        lambda node: replacement if _is_padam_state(node) else node, like, is_leaf=_is_padam_state
    )
