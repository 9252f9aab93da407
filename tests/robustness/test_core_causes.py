"""Regression tests for issue 10, written from its description: padam_core's causes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import padam_core
from tests.robustness.snapshot import assert_unchanged_on_error

# ---- cause 2: only Python numbers were checked ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lr", np.array(-1.0)),
        ("lr", np.float32(-0.5)),
        ("partial", np.array(0.7)),
        ("eps", "nan"),
        ("eps", "1e-8"),
        ("lr", None),
        ("b1", [0.9]),
        ("weight_decay", 1j),
        ("b2", np.array([0.9, 0.99])),
        ("partial", np.bool_(True)),
        ("lr", np.array(0.1 + 0j)),
    ],
)
def test_cause2_concrete_and_non_numeric_values_are_rejected_everywhere(name, value):
    params = [np.ones(3)]
    grads = [np.full(3, 0.5)]
    state = padam_core.init(params)
    with pytest.raises(ValueError, match=f"Invalid {name} value"):
        padam_core.update(grads, state, params, **{name: value})
    optimizer = padam_core.Padam([np.ones(3)], fused=False)
    with pytest.raises(ValueError, match=f"Invalid {name} value"):
        padam_core.Padam([np.ones(3)], **{name: value})
    assert_unchanged_on_error(lambda: optimizer.step([np.ones(3)]) or None, optimizer)


def test_cause2_concrete_zero_d_arrays_in_range_are_accepted():
    params = [np.ones(3)]
    state = padam_core.init(params)
    new, _ = padam_core.update(
        [np.full(3, 0.5)], state, params, lr=np.array(0.1), partial=np.array(0.25)
    )
    assert np.isfinite(new[0]).all() and (new[0] < 1).all()


def test_cause2_traced_values_skip_only_the_range_check():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    params = [jnp.ones(3)]
    state = padam_core.init(params)

    @jax.jit
    def step(lr):
        return padam_core.update([jnp.full(3, 0.5)], state, params, lr=lr)[0][0]

    assert bool(jnp.all(step(jnp.asarray(0.1)) < 1))
    with pytest.raises(ValueError, match="Invalid lr value"):  # concrete: range-checked
        padam_core.update([jnp.full(3, 0.5)], state, params, lr=jnp.asarray(-0.1))
    with pytest.raises(ValueError, match="Invalid lr value"):  # the dtype is checked even so
        jax.jit(lambda lr: padam_core.update([jnp.ones(3)], state, params, lr=lr))(
            jnp.asarray(True)
        )


# ---- cause 7: eps = 0 -----------------------------------------------------------------------


def test_cause7_eps_zero_is_rejected():
    with pytest.raises(ValueError, match=r"Invalid eps value: 0\.0 \(expected 0 < eps < inf\)"):
        padam_core.validate_hyperparameters(eps=0.0)
    with pytest.raises(ValueError, match="Invalid eps value"):
        padam_core.Padam([np.ones(2)], eps=0)
    state = padam_core.init([np.ones(2)])
    with pytest.raises(ValueError, match="Invalid eps value"):
        padam_core.update([np.zeros(2)], state, [np.ones(2)], eps=np.float64(0))


def test_cause7_smallest_eps_gives_no_nan_for_a_zero_gradient():
    state = padam_core.init([np.ones(2)])
    new, _ = padam_core.update([np.zeros(2)], state, [np.ones(2)], eps=math.ulp(0.0))
    np.testing.assert_array_equal(new[0], np.ones(2))
