"""asv benchmarks of padam_jax beside optax.amsgrad, both under jax.jit.

``setup`` compiles and runs the first step; every ``time_step`` is one jitted update and
``optax.apply_updates`` on a parameter dict, waited for with ``block_until_ready``.
``PADAM_BENCH_LARGE=1`` adds 1e7 elements.
"""

from __future__ import annotations

import os

SIZES = [10**5, 10**6] + ([10**7] if os.environ.get("PADAM_BENCH_LARGE") else [])


class JaxStep:
    """padam_jax.padam and inject_hyperparams(padam) beside the same for optax.amsgrad."""

    params = (
        ["padam", "optax_amsgrad", "inject_padam", "inject_optax_amsgrad", "padam_p0.3"],
        SIZES,
    )
    param_names = ("optimizer", "size")
    timeout = 300

    def setup(self, optimizer: str, size: int) -> None:
        try:
            import jax
            import optax

            import padam_jax
        except ImportError as error:
            raise NotImplementedError(f"needs jax and optax: {error}") from None
        makers = {
            "padam": lambda: padam_jax.padam(learning_rate=1e-3),
            "padam_p0.3": lambda: padam_jax.padam(learning_rate=1e-3, partial=0.3),
            "optax_amsgrad": lambda: optax.amsgrad(learning_rate=1e-3),
            "inject_padam": lambda: optax.inject_hyperparams(padam_jax.padam)(learning_rate=1e-3),
            "inject_optax_amsgrad": lambda: optax.inject_hyperparams(optax.amsgrad)(
                learning_rate=1e-3
            ),
        }
        transform = makers[optimizer]()
        key = jax.random.PRNGKey(0)
        self.params_tree = {
            "w": jax.random.normal(key, (size,)),
            "b": jax.random.normal(key, (100,)),
        }
        grads = jax.tree.map(lambda p: 0.01 * p + 0.001, self.params_tree)

        @jax.jit
        def step(params, state):
            updates, state = transform.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self.step_fn, self.state = step, transform.init(self.params_tree)
        self.block = jax.block_until_ready
        self.time_step(optimizer, size)  # compile outside the timing

    def time_step(self, optimizer: str, size: int) -> None:
        self.params_tree, self.state = self.step_fn(self.params_tree, self.state)
        self.block(self.params_tree)
