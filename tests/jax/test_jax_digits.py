"""A real training run: a small MLP in plain JAX learns scikit-learn's bundled 8x8 digits.

1797 images, 64 pixels, 10 classes; 75/25 split with a fixed seed. Padam at the paper's
settings (learning rate 0.1, partial 1/8, weight decay 5e-4 as L2) trains 30 epochs of
minibatches of 64 inside one jitted ``lax.scan`` and must reach 95% test accuracy (measured
0.969 with these seeds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from padam_jax import padam

datasets = pytest.importorskip("sklearn.datasets")
model_selection = pytest.importorskip("sklearn.model_selection")

EPOCHS, BATCH, HIDDEN = 30, 64, 64
REQUIRED_TEST_ACCURACY = 0.95


def init_mlp(key: jax.Array) -> dict[str, jax.Array]:
    first, second = jax.random.split(key)
    return {
        "w1": jax.random.normal(first, (64, HIDDEN), jnp.float32) / 8.0,
        "b1": jnp.zeros(HIDDEN, jnp.float32),
        "w2": jax.random.normal(second, (HIDDEN, 10), jnp.float32) / 8.0,
        "b2": jnp.zeros(10, jnp.float32),
    }


def logits(params: dict[str, jax.Array], images: jax.Array) -> jax.Array:
    hidden = jnp.tanh(images @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def loss(params: dict[str, jax.Array], images: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, images), labels).mean()


def test_mlp_on_digits_reaches_stated_accuracy() -> None:
    digits = datasets.load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    train_x, test_x, train_y, test_y = model_selection.train_test_split(
        images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    batches = len(train_x) // BATCH
    # Shuffled minibatches for every epoch, drawn up front: one flat scan compiles fastest.
    rng = np.random.default_rng(1)
    order = np.concatenate(
        [rng.permutation(len(train_x))[: batches * BATCH] for _ in range(EPOCHS)]
    ).reshape(EPOCHS * batches, BATCH)
    optimizer = padam(learning_rate=0.1, partial=0.125, weight_decay=5e-4)

    @jax.jit
    def train(params, batch_images, batch_labels):
        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss)(params, *batch)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        carry = (params, optimizer.init(params))
        return jax.lax.scan(step, carry, (batch_images, batch_labels))[0]

    start = init_mlp(jax.random.key(0))
    params, state = train(start, jnp.asarray(train_x[order]), jnp.asarray(train_y[order]))
    predictions = np.asarray(jnp.argmax(logits(params, jnp.asarray(test_x)), axis=-1))
    accuracy = float(np.mean(predictions == test_y))
    untrained = np.asarray(jnp.argmax(logits(start, jnp.asarray(test_x)), axis=-1))
    assert np.mean(untrained == test_y) < 0.3
    assert int(state[1].count) == EPOCHS * batches  # chain(add_decayed_weights, padam, lr)
    print(f"digits MLP test accuracy {accuracy:.4f}")
    assert accuracy >= REQUIRED_TEST_ACCURACY, f"test accuracy {accuracy:.3f}"
