"""Run by test_jax_sharding.py in its own process: Padam on 8 host CPU devices with NamedSharding.

The parent sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before this process imports
jax (the flag is read once, at backend start). Prints one JSON line with the checks' results.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from padam_jax import padam

jax.config.update("jax_enable_x64", True)

STEPS = 20


def loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] - y) ** 2)


def train(params: dict, x: jax.Array, y: jax.Array) -> tuple[dict, optax.OptState]:
    optimizer = padam(learning_rate=0.05, weight_decay=1e-3)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params, x, y)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(STEPS):
        params, state = step(params, state)
    return params, state


def main() -> None:
    devices = jax.devices()
    mesh = Mesh(np.array(devices).reshape(2, 4), ("data", "model"))
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(size=(16, 32)) / 4.0,
        "b1": np.zeros(32),
        "w2": rng.normal(size=(32, 8)) / 6.0,
    }
    x, y = rng.normal(size=(64, 16)), rng.normal(size=(64, 8))
    specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None)}
    shardings = {name: NamedSharding(mesh, spec) for name, spec in specs.items()}

    sharded = {name: jax.device_put(value, shardings[name]) for name, value in params.items()}
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    y_sharded = jax.device_put(y, NamedSharding(mesh, P("data", None)))
    single = {name: jax.device_put(value, devices[0]) for name, value in params.items()}

    sharded_params, sharded_state = train(sharded, x_sharded, y_sharded)
    single_params, _ = train(single, jnp.asarray(x), jnp.asarray(y))

    padam_state = sharded_state[1]  # chain: (add_decayed_weights, scale_by_padam, lr)
    state_shardings_match = all(
        moment[name].sharding.is_equivalent_to(shardings[name], moment[name].ndim)
        for moment in (padam_state.mu, padam_state.nu, padam_state.nu_max)
        for name in params
    )
    params_shardings_match = all(
        sharded_params[name].sharding.is_equivalent_to(shardings[name], params[name].ndim)
        for name in params
    )
    max_param_difference = max(
        float(np.max(np.abs(np.asarray(sharded_params[n]) - np.asarray(single_params[n]))))
        for n in params
    )
    # Hyperparameters as arrays (inject_hyperparams), one step outside jit, on sharded params.
    injected = optax.inject_hyperparams(padam)(learning_rate=0.05, partial=0.25)
    eager_results = []
    for start in (sharded, single):
        updates, _ = injected.update(start, injected.init(start), start)
        eager_results.append(optax.apply_updates(start, updates))
    eager_sharding_kept = eager_results[0]["w1"].sharding.is_equivalent_to(shardings["w1"], 2)
    eager_difference = max(
        float(np.max(np.abs(np.asarray(eager_results[0][n]) - np.asarray(eager_results[1][n]))))
        for n in params
    )
    max_param_scale = max(float(np.max(np.abs(np.asarray(single_params[n])))) for n in params)
    print(
        json.dumps(
            {
                "device_count": len(devices),
                "state_shardings_match": state_shardings_match,
                "params_shardings_match": params_shardings_match,
                "w1_shards": len(sharded_params["w1"].addressable_shards),
                "relative_difference": max_param_difference / max_param_scale,
                "count": int(padam_state.count),
                "inject_eager_sharding_kept": eager_sharding_kept,
                "inject_eager_difference": eager_difference,
                "moved": float(np.max(np.abs(np.asarray(single_params["w1"]) - params["w1"]))),
            }
        )
    )


if __name__ == "__main__":
    main()
