"""padam_jax.save_state / load_state: the shared state file, for any optax state holding Padam."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from padam_jax import ScaleByPadamState, load_state, padam, save_state, scale_by_padam
from tests.conformance.state_files import malformed_files, read_raw

pytest.importorskip("safetensors")


def make_params(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=3), jnp.float32)},
            "scale": jnp.asarray(rng.normal(), jnp.float32)}  # fmt: skip


def train(optimizer, params, state, steps, seed=1):
    rng = np.random.default_rng(seed)

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        params, state = step(params, state, grads)
    return params, state


def padam_part(state) -> ScaleByPadamState:
    return next(
        node
        for node in jax.tree_util.tree_leaves(
            state, is_leaf=lambda n: isinstance(n, ScaleByPadamState)
        )
        if isinstance(node, ScaleByPadamState)
    )


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_continues_bitwise(tmp_path):
    optimizer = padam(learning_rate=0.05, weight_decay=0.01, variant="torch")
    params = make_params()
    straight_params, _ = train(optimizer, params, optimizer.init(params), 8)

    middle, state = train(optimizer, params, optimizer.init(params), 3)
    path = tmp_path / "state.safetensors"
    save_state(path, state, variant="torch")
    loaded = load_state(path, like=optimizer.init(middle), variant="torch")
    assert_trees_equal(loaded, state)
    rng = np.random.default_rng(1)
    for _ in range(3):  # the gradients the first run used
        jax.tree.map(lambda p: rng.normal(size=p.shape), middle)

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(5):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), middle)
        middle, loaded = step(middle, loaded, grads)
    assert_trees_equal(middle, straight_params)


def test_file_order_is_tree_order_and_names_are_paths(tmp_path):
    optimizer = padam()
    state = optimizer.init(make_params())
    path = tmp_path / "state.safetensors"
    save_state(path, state)
    tensors, metadata = read_raw(path)
    assert metadata["names"] == "[\"['dense']['bias']\", \"['dense']['kernel']\", \"['scale']\"]"
    assert tensors["state/1/exp_avg"].shape == (4, 3)
    assert metadata["amsgrad"] == "true" and int(tensors["step"]) == 0


def test_inject_hyperparams_and_bare_transform_states_work(tmp_path):
    params = make_params()
    injected = optax.inject_hyperparams(padam)(learning_rate=0.05)
    _, state = train(injected, params, injected.init(params), 2)
    path = tmp_path / "state.safetensors"
    save_state(path, state)
    bare = scale_by_padam()
    restored = load_state(path, like=bare.init(params))
    assert isinstance(restored, ScaleByPadamState)
    assert_trees_equal(restored, padam_part(state))
    # The other parts of `like` (the injected hyperparameters, their count) stay as they are.
    fresh = injected.init(params)
    loaded = load_state(path, like=fresh)
    assert int(loaded.count) == 0 and int(padam_part(loaded).count) == 2


def test_mu_dtype_bfloat16_round_trips_and_is_checked(tmp_path):
    params = make_params()
    optimizer = padam(mu_dtype=jnp.bfloat16)
    _, state = train(optimizer, params, optimizer.init(params), 2)
    path = tmp_path / "state.safetensors"
    save_state(path, state)
    assert_trees_equal(load_state(path, like=optimizer.init(params)), state)
    with pytest.raises(ValueError, match=r"expected .* and float32"):
        load_state(path, like=padam().init(params))


def test_shardings_of_like_are_kept(tmp_path):
    params = make_params()
    optimizer = padam()
    _, state = train(optimizer, params, optimizer.init(params), 2)
    path = tmp_path / "state.safetensors"
    save_state(path, state)
    like = optimizer.init(params)
    loaded = load_state(path, like=like)
    for new, old in zip(jax.tree.leaves(loaded), jax.tree.leaves(like), strict=True):
        assert new.sharding == old.sharding
    abstract = jax.eval_shape(optimizer.init, params)
    assert_trees_equal(load_state(path, like=abstract), state)


def test_states_without_or_with_two_padams_are_refused(tmp_path):
    with pytest.raises(ValueError, match="found 0"):
        save_state(tmp_path / "s.safetensors", optax.adam(0.1).init(make_params()))
    twice = optax.chain(scale_by_padam(), scale_by_padam())
    with pytest.raises(ValueError, match="found 2"):
        save_state(tmp_path / "s.safetensors", twice.init(make_params()))


def test_every_malformed_file_is_rejected(tmp_path):
    optimizer = padam(learning_rate=0.05)
    source = make_params(seed=4)
    _, other = train(optimizer, source, optimizer.init(source), 3, seed=9)
    good = tmp_path / "good.safetensors"
    save_state(good, other)
    params = make_params()
    _, like = train(optimizer, params, optimizer.init(params), 2)
    before = jax.tree.map(np.array, like)
    cases = malformed_files(good, tmp_path, variant="reference")
    for message, path in cases:
        with pytest.raises(
            ValueError, match=r"Cannot read Padam state from .*" + re.escape(message)
        ):
            load_state(path, like=like)
    assert_trees_equal(like, before)
    assert int(padam_part(load_state(good, like=like)).count) == 3


def test_step_beyond_the_int32_count_is_refused(tmp_path):
    from padam_core.state_file import write_state_file

    path = tmp_path / "long.safetensors"
    write_state_file(path, step=2**31, exp_avg=[np.zeros(2, np.float32)],
                     exp_avg_sq=[np.zeros(2, np.float32)], max_exp_avg_sq=None, names=["x"],
                     variant="reference", amsgrad=False)  # fmt: skip
    like = padam(amsgrad=False).init(jnp.zeros(2, jnp.float32))
    with pytest.raises(ValueError, match="does not fit the state's int32 count"):
        load_state(path, like=like)
