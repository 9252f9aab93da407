"""docs/recipes.md, flax: NNX ``nnx.Optimizer(model, padam(...), wrt=nnx.Param)``, linen's
``TrainState``, and orbax checkpointing of the optax state (restore, continue, same numbers)."""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")
train_state = pytest.importorskip("flax.training.train_state")
jnp = jax.numpy

from padam_jax import padam  # noqa: E402


def _data():
    x = jax.random.normal(jax.random.key(0), (32, 4), dtype=jnp.float32)
    return x, x.sum(axis=1, keepdims=True)


def test_nnx_optimizer_with_padam_trains():
    x, y = _data()
    model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, padam(learning_rate=0.05, variant="torch"), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return jnp.mean((model(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x, y)) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0]


class _Linear(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(1)(x)


def _linen_state():
    x, _ = _data()
    module = _Linear()
    params = module.init(jax.random.key(0), x)["params"]
    return train_state.TrainState.create(
        apply_fn=module.apply, params=params, tx=padam(learning_rate=0.05, variant="torch")
    )


@jax.jit
def _linen_step(state, x, y):
    def loss_fn(params):
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    grads = jax.grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads)


def test_linen_train_state_and_orbax_checkpoint_resume(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    x, y = _data()
    straight = _linen_state()
    for _ in range(10):
        straight = _linen_step(straight, x, y)

    state = _linen_state()
    for _ in range(5):
        state = _linen_step(state, x, y)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "step5", {"params": state.params, "opt_state": state.opt_state})
    checkpointer.wait_until_finished()

    fresh = _linen_state()  # the target: same structure (the optax NamedTuples), new values
    target = {"params": fresh.params, "opt_state": fresh.opt_state}
    restored = checkpointer.restore(tmp_path / "step5", target)
    assert type(restored["opt_state"]) is type(state.opt_state)
    state = fresh.replace(step=5, params=restored["params"], opt_state=restored["opt_state"])
    for _ in range(5):
        state = _linen_step(state, x, y)
    for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(straight.params),
                            strict=True):  # fmt: skip
        assert jnp.array_equal(ours, theirs)
