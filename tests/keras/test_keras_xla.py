"""The JAX lowerings of padam_keras._xla: same values as the plain forms, and the compiled,
donated step they exist for has no conditional and no copy of a parameter-sized array."""

from __future__ import annotations

import numpy as np
import pytest

from tests.keras.keras_testing import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="JAX lowerings (padam_keras._xla)")


def test_where_clip_equals_jnp_clip_on_every_special_value() -> None:
    import jax.numpy as jnp

    from padam_keras._xla import jax_namespace

    largest = float(np.finfo(np.float32).max)
    x = jnp.asarray([np.nan, np.inf, -np.inf, largest, -largest, 0.0, -0.0, 1.5, -2.5], "float32")
    for low, high in ((-largest, largest), (None, largest), (-1.0, None), (-1.0, 1.0)):
        got = np.asarray(jax_namespace.clip(x, min=low, max=high))
        want = np.asarray(jnp.clip(x, min=low, max=high))
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    assert jax_namespace.sqrt is jnp.sqrt  # everything else is jax.numpy's own


@pytest.mark.parametrize("taken", [True, False])
def test_select_step_runs_exactly_the_chosen_step_under_jit(taken: bool) -> None:
    import jax
    import jax.numpy as jnp

    from padam_keras._xla import select_step

    def specialised(state, inputs):
        return (state[0] + inputs[0], state[1] * 2.0)

    def general(state, inputs):
        return (state[0] - inputs[0], state[1] * 3.0)

    state = (jnp.arange(4.0), jnp.ones((2, 3)))
    inputs = (jnp.full(4, 10.0),)
    run = jax.jit(lambda flag, s, i: select_step(flag, specialised, general, s, i))
    got = run(jnp.asarray(taken), state, inputs)
    want = (specialised if taken else general)(state, inputs)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_donated_fit_step_has_no_conditional_and_copies_no_slot() -> None:
    """Keras's jitted train step (state donated) with the traced-p dispatch (p read from its
    variable) updates the slots in place: lax.cond copied every output, and minimum(v, max)
    made XLA copy v."""
    import jax
    import keras

    from padam_keras import Padam

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32), keras.layers.Dense(4)])
    model.compile(optimizer=Padam(learning_rate=0.01, partial=0.125), loss="mse")
    x, y = np.ones((8, 16), "float32"), np.ones((8, 4), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    state = model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
        purge_model_variables=False,
    )
    step = jax.jit(model.train_step, donate_argnums=0)
    text = step.lower(state, (x, y)).compile().as_text()
    entry = text[text.index("ENTRY") :]
    assert "conditional(" not in text
    # Parameters state_2__* are the optimizer's variables (slots, iterations, partial).
    slot_copies = [line for line in entry.splitlines() if " copy(%state_2__" in line]
    assert [line for line in slot_copies if "[]" not in line.split("=")[1]] == []
