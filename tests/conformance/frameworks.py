"""One trajectory per framework from the same float32 inputs and hyperparameters.

Each runner takes docs/numerics.md's core names (tests.oracle.Config), maps them to its framework's
dialect, runs the framework's own optimizer for ``len(grads)`` steps and returns the parameter
after every step as float64 NumPy arrays. Gradients are a fixed recorded sequence, so every
framework sees exactly the same inputs.
"""

from __future__ import annotations

import itertools

import numpy as np

from tests.oracle import Config, oracle_trajectory, relative_error


def run_core(theta0: np.ndarray, grads: list[np.ndarray], config: Config) -> list[np.ndarray]:
    import padam_core

    param = theta0.astype(np.float32)
    optimizer = padam_core.Padam([param], lr=config.lr, b1=config.b1, b2=config.b2,
                                 eps=config.eps, partial=config.partial,
                                 weight_decay=config.weight_decay,
                                 decoupled_weight_decay=config.decoupled_weight_decay,
                                 amsgrad=config.amsgrad, maximize=config.maximize,
                                 variant=config.variant)  # fmt: skip
    trajectory = []
    for grad in grads:
        optimizer.step([grad.astype(np.float32)])
        trajectory.append(param.astype(np.float64))
    return trajectory


def run_torch(
    theta0: np.ndarray, grads: list[np.ndarray], config: Config, *, foreach: bool = False
) -> list[np.ndarray]:
    import torch

    from padam_torch import Padam

    param = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float32))
    optimizer = Padam([param], lr=config.lr, betas=(config.b1, config.b2), eps=config.eps,
                      weight_decay=config.weight_decay, partial=config.partial,
                      amsgrad=config.amsgrad, decoupled_weight_decay=config.decoupled_weight_decay,
                      maximize=config.maximize, variant=config.variant,
                      foreach=foreach)  # fmt: skip
    trajectory = []
    for grad in grads:
        param.grad = torch.tensor(grad, dtype=torch.float32)
        optimizer.step()
        trajectory.append(param.detach().numpy().astype(np.float64))
    return trajectory


def run_jax(theta0: np.ndarray, grads: list[np.ndarray], config: Config) -> list[np.ndarray]:
    import jax
    import jax.numpy as jnp
    import optax

    from padam_jax import padam

    optimizer = padam(learning_rate=config.lr, b1=config.b1, b2=config.b2, eps=config.eps,
                      partial=config.partial, weight_decay=config.weight_decay,
                      decoupled_weight_decay=config.decoupled_weight_decay,
                      amsgrad=config.amsgrad, maximize=config.maximize,
                      variant=config.variant)  # fmt: skip

    @jax.jit
    def step(param, state, grad):
        updates, state = optimizer.update(grad, state, param)
        return optax.apply_updates(param, updates), state

    param = jnp.asarray(theta0, dtype=jnp.float32)
    state = optimizer.init(param)
    trajectory = []
    for grad in grads:
        param, state = step(param, state, jnp.asarray(grad, dtype=jnp.float32))
        trajectory.append(np.asarray(param, dtype=np.float64))
    return trajectory


def assert_one_trajectory(theta0: np.ndarray, grads: list[np.ndarray], config: Config) -> None:
    """padam_core, padam_torch (default and foreach) and padam_jax agree within 1e-5 of each
    other at the last step and of the float64 oracle at every step (docs/numerics.md)."""
    runs = {
        "padam_core": run_core(theta0, grads, config),
        "padam_torch": run_torch(theta0, grads, config),
        "padam_torch foreach": run_torch(theta0, grads, config, foreach=True),
        "padam_jax": run_jax(theta0, grads, config),
    }
    oracle = oracle_trajectory(theta0, grads, config)
    for (name_a, run_a), (name_b, run_b) in itertools.combinations(runs.items(), 2):
        error = relative_error(run_a[-1], run_b[-1])
        assert error <= 1e-5, f"{name_a} vs {name_b}: {error:.3g}"
    for name, run in runs.items():
        error = max(relative_error(a, e) for a, e in zip(run, oracle, strict=True))
        assert error <= 1e-5, f"{name} vs the float64 oracle: {error:.3g}"
