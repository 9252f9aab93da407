"""The non-finite guard of :func:`padam_jax.padam` / :func:`padam_jax.scale_by_padam`.

``skip_nonfinite=True`` wraps the optimizer: when any gradient leaf holds a NaN or an inf, the
step changes nothing. The returned updates are -0.0, so ``optax.apply_updates`` leaves every
parameter bitwise as it was (x + (-0.0) == x for every x, -0.0 included, while x + 0.0 turns
-0.0 into +0.0); the wrapped state (moments, counts, the other transforms' states) is returned
as it came in, and :attr:`SkipNonfiniteState.skipped` goes up by one. Old and new values are
selected with ``jnp.where`` on the finiteness flag, so under ``jit`` nothing syncs with the host.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import padam_core
from padam_jax.tree import find_one

__all__ = ["SkipNonfiniteState", "skip_nonfinite_steps", "skipped_steps"]


class SkipNonfiniteState(NamedTuple):
    """State of a Padam optimizer made with ``skip_nonfinite=True``."""

    skipped: jax.Array  # steps skipped for a NaN/inf gradient (int32, saturates)
    inner_state: Any  # the optimizer's state without the guard


def check_skip_nonfinite(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid skip_nonfinite value: {value!r} (expected True or False)")


def _skipped_update(update: jax.Array) -> jax.Array:
    # -(0) is -0.0 (and -0.0 - 0.0j for complex leaves): the additive identity bit for bit.
    return jnp.negative(jnp.zeros_like(update))


def skip_nonfinite_steps(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` whose steps with a NaN/inf gradient are skipped and counted."""

    def init_fn(params: optax.Params) -> SkipNonfiniteState:
        return SkipNonfiniteState(skipped=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(
        updates: optax.Updates, state: SkipNonfiniteState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, SkipNonfiniteState]:
        # The gradients as given (before maximize and weight decay): one read of them.
        finite = padam_core.all_finite(jax.tree.leaves(updates), xp=jnp)
        new_updates, new_inner = inner.update(updates, state.inner_state, params)

        def keep(new: Any, old: Any) -> Any:
            return jnp.where(finite, new, old)

        kept_updates = jax.tree.map(lambda u: keep(u, _skipped_update(u)), new_updates)
        kept_inner = jax.tree.map(keep, new_inner, state.inner_state)
        skipped = jnp.where(finite, state.skipped, optax.safe_increment(state.skipped))
        return kept_updates, SkipNonfiniteState(skipped=skipped, inner_state=kept_inner)

    return optax.GradientTransformation(init_fn, update_fn)


def skipped_steps(opt_state: Any) -> jax.Array:
    """The number of steps skipped for a non-finite gradient (an int32 0-d array).

    ``opt_state`` is any optax state holding one ``skip_nonfinite=True`` Padam state: padam's
    own, a chain's, ``inject_hyperparams``'s, ``MultiSteps``'s, ... Works under ``jit``.
    """
    try:
        state = find_one(opt_state, SkipNonfiniteState, "padam state made with skip_nonfinite=True")
    except ValueError as error:
        raise ValueError(f"skipped_steps: {error}") from None
    return state.skipped
