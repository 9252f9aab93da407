"""Finding padam's own state inside any optax state tree (chains, inject_hyperparams, ...)."""

from __future__ import annotations

from typing import Any, TypeVar

import jax

__all__ = ["find_one"]

State = TypeVar("State")


def find_one(opt_state: Any, state_type: type[State], description: str) -> State:
    """The one node of ``state_type`` in ``opt_state``; ``ValueError`` ("expected an optax state
    holding one <description>, found <n>") when there is none or more than one."""

    def is_state(node: Any) -> bool:
        return isinstance(node, state_type)

    found = [
        node for node in jax.tree_util.tree_leaves(opt_state, is_leaf=is_state) if is_state(node)
    ]
    if len(found) != 1:
        raise ValueError(f"expected an optax state holding one {description}, found {len(found)}")
    return found[0]
