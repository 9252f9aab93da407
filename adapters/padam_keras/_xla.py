"""How the Keras adapter hands padam_core's kernel to XLA on the JAX backend (no maths here).

Two lowerings, each chosen by measuring the optimizer part of a jitted Keras ``fit`` step (state
donated, as Keras's JAX trainer does) against ``keras.optimizers.Adam(amsgrad=True)``:

* :data:`jax_namespace` is ``jax.numpy`` with ``clip`` written as ``where``. Both give the same
  value for every input (NaN stays NaN, +-inf become the bounds), but XLA's CPU fusion
  duplicates the producer of ``minimum(x, constant)`` into each consumer: the new second moment
  ``v = clip(b2 * v + (1 - b2) * g^2, max)`` was recomputed inside the running-max loop, which
  then still needed the old ``v`` after the new one had been written into its (donated) buffer,
  so XLA copied ``v`` first: one extra read and write of every second moment per step.
* :func:`select_step` runs ``specialised`` or ``general`` on the state as chosen by a traced
  predicate. ``lax.cond`` would do it, but XLA gives a conditional's results their own buffers
  and copies them into the donated ones afterwards (four parameter-sized copies per variable,
  about twice the update's own memory traffic). A ``while_loop`` updates its carry in place, so
  two loops of zero or one trip each select the step with no copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["jax_namespace", "select_step"]


def _clip(x: Any, /, min: Any = None, max: Any = None) -> Any:
    """``jnp.clip(x, min, max)`` as ``where`` (the same values; see the module docstring)."""
    if min is not None:
        x = jnp.where(x < min, min, x)
    return x if max is None else jnp.where(x > max, max, x)


class _JaxNumpy:
    """``jax.numpy`` with :func:`_clip` for ``clip``; every other name is ``jax.numpy``'s."""

    clip = staticmethod(_clip)

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)


jax_namespace = _JaxNumpy()


State = tuple[Any, ...]


def select_step(
    predicate: Any,
    specialised: Callable[[State, State], State],
    general: Callable[[State, State], State],
    state: State,
    inputs: State,
) -> State:
    """``specialised(state, inputs)`` if ``predicate`` else ``general(state, inputs)``.

    Both return new arrays of the shapes and dtypes of ``state``; ``inputs`` are read only.
    """

    def run(trips: Any, step: Callable[[State, State], State], state: State) -> State:
        def body(carry: tuple[Any, State, State]) -> tuple[Any, State, State]:
            count, state, inputs = carry
            # Without the barrier XLA hoists the loop-invariant, gradient-sized products (such
            # as (1 - b1) * g) out of the loop and writes them to memory.
            state, inputs = jax.lax.optimization_barrier((state, inputs))
            return count + 1, step(state, inputs), inputs

        carry = (jnp.asarray(0, jnp.int32), state, inputs)
        return jax.lax.while_loop(lambda carry: carry[0] < trips, body, carry)[1]

    one, zero = jnp.asarray(1, jnp.int32), jnp.asarray(0, jnp.int32)
    state = run(jnp.where(predicate, one, zero), specialised, state)
    return run(jnp.where(predicate, zero, one), general, state)
