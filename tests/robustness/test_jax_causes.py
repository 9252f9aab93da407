"""Regression tests for issue 10, written from its description: padam_jax's causes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.robustness.snapshot import assert_unchanged_on_error

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

from padam_jax import padam, scale_by_padam, state_from_arrays, state_to_arrays  # noqa: E402


def _params():
    return {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros(2, jnp.float32)}


# ---- cause 5: learning_rate=None silently ascended ------------------------------------------


@pytest.mark.parametrize("value", [None, "0.1", -0.1, np.array(-1.0), jnp.asarray(-0.1)])
def test_cause5_learning_rate_none_and_other_bad_values_are_refused(value):
    with pytest.raises(ValueError, match="Invalid learning_rate value"):
        padam(value)
    with pytest.raises(ValueError, match="Invalid weight_decay value"):
        padam(0.1, weight_decay=None)


# ---- cause 8: padam_jax checkpoints ----------------------------------------------------------


def _trained_state():
    optimizer = padam(0.1)
    params = _params()
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = optimizer.update(grads, state, params)
    return optimizer, params, state


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.__setitem__("[1].count", np.array(-1, np.int32)), "negative"),
        (lambda a: a["[1].mu['w']"].fill(np.nan), "NaN or Inf"),
        (lambda a: a["[1].nu['b']"].fill(-1.0), "negative"),
        (lambda a: a["[1].nu_max['b']"].fill(np.inf), "NaN or Inf"),
        (lambda a: a.__setitem__(
            "[1].mu['b']", np.zeros(2, dtype=[("x", "<f4")])), "structured"),
    ],
)  # fmt: skip
def test_cause8_checkpoint_values_are_checked(edit, message):
    optimizer, params, state = _trained_state()
    arrays = state_to_arrays(state)
    edit(arrays)
    with pytest.raises(ValueError, match=message):
        state_from_arrays(arrays, like=optimizer.init(params))


def test_cause8_an_optax_amsgrad_state_is_not_a_padam_state():
    params = _params()
    amsgrad = optax.chain(optax.identity(), optax.scale_by_amsgrad(), optax.identity())
    arrays = state_to_arrays(amsgrad.init(params))
    with pytest.raises(ValueError, match="ScaleByAmsgradState"):
        state_from_arrays(arrays, like=padam(0.1).init(params))


def test_cause8_restored_arrays_are_copies():
    optimizer, params, state = _trained_state()
    arrays = state_to_arrays(state)
    restored = state_from_arrays(arrays, like=jax.eval_shape(optimizer.init, params))
    arrays["[1].mu['w']"][...] = 123.0
    assert float(restored[1].mu["w"][0, 0]) != 123.0


# ---- cause 13: optax's conventions -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("transform", [padam, lambda lr: scale_by_padam()])
def test_cause13_updates_come_back_in_the_gradients_dtype(dtype, transform):
    optimizer = transform(0.1)
    params = {"w": jnp.ones(4, dtype)}
    state = optimizer.init(params)
    updates, new_state = optimizer.update({"w": jnp.full(4, 0.5, dtype)}, state, params)
    assert updates["w"].dtype == dtype
    # lax.cond needs the same state types on both branches.
    assert jax.tree.map(lambda a: a.dtype, new_state) == jax.tree.map(lambda a: a.dtype, state)


@pytest.mark.parametrize("weight_decay", [0, 0.0, 1e-2])
@pytest.mark.parametrize("decoupled", [False, True])
def test_cause13_inject_hyperparams_builds_the_same_state_structure(weight_decay, decoupled):
    params = _params()
    plain = padam(0.1, weight_decay=weight_decay, decoupled_weight_decay=decoupled)
    injected = optax.inject_hyperparams(padam)(
        0.1, weight_decay=weight_decay, decoupled_weight_decay=decoupled
    )
    plain_state, injected_state = plain.init(params), injected.init(params)
    assert jax.tree.structure(plain_state) == jax.tree.structure(injected_state.inner_state)
    grads = jax.tree.map(jnp.ones_like, params)
    expected, _ = plain.update(grads, plain_state, params)
    got, _ = injected.update(grads, injected_state, params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), expected, got
    )  # pow vs sqrt chain
    if weight_decay == 0:
        plain.update(grads, plain_state)  # no params needed without decay
        injected.update(grads, injected_state)


def test_cause13_a_rejected_update_changes_nothing():
    optimizer, params, state = _trained_state()
    bad = {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}
    error = assert_unchanged_on_error(lambda: optimizer.update(bad, state, params), state, params)
    assert isinstance(error, ValueError) and "shape" in str(error)


_SHARDED_RESTORE = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from padam_jax import padam, state_from_arrays, state_to_arrays
mesh = jax.make_mesh((2, 2), ("a", "b"))
sharding = NamedSharding(mesh, P("a", None))
params = {"w": jax.device_put(jnp.ones((4, 2)), sharding)}
optimizer = padam(0.1)
arrays = state_to_arrays(optimizer.init(params))
like = jax.eval_shape(optimizer.init, params)
try:
    state_from_arrays(arrays, like=like)
except ValueError as error:
    assert "jax.set_mesh" in str(error), error
else:
    raise AssertionError("an abstract-mesh sharding was not refused")
with jax.set_mesh(mesh):
    restored = state_from_arrays(arrays, like=like)
assert restored[1].mu["w"].sharding.is_equivalent_to(sharding, 2)
restored = state_from_arrays(arrays, like=optimizer.init(params))
assert restored[1].nu["w"].sharding.is_equivalent_to(sharding, 2)
print("ok")
"""


def test_cause8_restore_onto_a_make_mesh_mesh_keeps_the_sharding():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'adapters'}"}
    result = subprocess.run([sys.executable, "-c", _SHARDED_RESTORE], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
