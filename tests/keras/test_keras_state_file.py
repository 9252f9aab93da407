"""padam_keras.save_state / load_state on this process's Keras backend: resume, hand-offs from
torch and to JAX, and every malformed file rejected with nothing changed."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from padam_keras import Padam, load_state, save_state
from tests.conformance import handoff
from tests.conformance.state_files import malformed_files, read_raw
from tests.conformance.test_state_handoff import CONFIGS, assert_close, make_problem

pytest.importorskip("safetensors")


def make_optimizer(**kwargs):
    return Padam(learning_rate=0.05, l2_weight_decay=0.01, **kwargs)


def make_variables(seed=0):
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=(4, 6)).astype(np.float32), name="kernel"),
            keras.Variable(rng.normal(size=3).astype(np.float32), name="bias")]  # fmt: skip


def apply_steps(optimizer, variables, steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype(np.float32))
                 for v in variables]  # fmt: skip
        optimizer.apply(grads, variables)


def snapshot(optimizer, variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in [*variables, *optimizer.variables]]


def test_round_trip_continues_bitwise(tmp_path):
    straight_variables = make_variables()
    straight = make_optimizer()
    apply_steps(straight, straight_variables, 6)

    variables = make_variables()
    first = make_optimizer()
    apply_steps(first, variables, 6)
    path = tmp_path / "state.safetensors"
    save_state(path, first)
    second = make_optimizer()
    second.build(variables)
    load_state(path, second)
    assert int(keras.ops.convert_to_numpy(second.iterations)) == 6
    for a, b in zip(snapshot(second, variables), snapshot(first, variables), strict=True):
        np.testing.assert_array_equal(a, b)
    apply_steps(second, variables, 2, seed=5)
    apply_steps(straight, straight_variables, 2, seed=5)
    for a, b in zip(variables, straight_variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_names_are_variable_paths(tmp_path):
    optimizer = make_optimizer(variant="optax")
    variables = make_variables()
    optimizer.build(variables)
    path = tmp_path / "state.safetensors"
    save_state(path, optimizer)
    _, metadata = read_raw(path)
    assert metadata["names"] == '["kernel", "bias"]'
    assert metadata["variant"] == "optax"


def test_an_unbuilt_optimizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not built yet"):
        save_state(tmp_path / "state.safetensors", make_optimizer())
    with pytest.raises(TypeError, match=r"padam_keras\.Padam"):
        save_state(tmp_path / "state.safetensors", keras.optimizers.Adam())


@pytest.mark.parametrize("variant", ["reference", "optax"])
def test_torch_to_keras_to_jax_matches_the_torch_run(tmp_path, variant):
    pytest.importorskip("torch")
    pytest.importorskip("optax")
    config = CONFIGS[variant]
    params, grads = make_problem()
    after_torch = handoff.torch_leg(params, grads[:30], config, save=tmp_path / "torch.st")
    after_keras = handoff._keras_leg_here(after_torch, grads[30:70], config,
                                          load=str(tmp_path / "torch.st"),
                                          save=str(tmp_path / "keras.st"))  # fmt: skip
    ended = handoff.jax_leg(after_keras, grads[70:], config, load=tmp_path / "keras.st")
    straight = handoff.torch_leg(params, grads, config)
    assert_close(ended, straight, f"torch -> Keras ({keras.backend.backend()}) -> JAX")


def test_every_malformed_file_is_rejected_and_nothing_changes(tmp_path):
    other = make_optimizer()
    other_variables = make_variables(seed=3)
    apply_steps(other, other_variables, 3, seed=9)
    good = tmp_path / "good.safetensors"
    save_state(good, other)

    optimizer = make_optimizer()
    variables = make_variables()
    apply_steps(optimizer, variables, 2)
    before = snapshot(optimizer, variables)
    for message, path in malformed_files(good, tmp_path, variant="reference"):
        with pytest.raises(
            ValueError, match=r"Cannot read Padam state from .*" + re.escape(message)
        ):
            load_state(path, optimizer)
        for a, b in zip(snapshot(optimizer, variables), before, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    load_state(good, optimizer)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 3
