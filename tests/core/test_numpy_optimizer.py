"""padam_core.Padam: in-place updates on NumPy arrays and pickle-free checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest

import padam_core
from tests.oracle import Config, gradient_sequence, oracle_trajectory, relative_error

SUFFIXES = [".npz", ".safetensors"]


def make_params():
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=()), "h": np.ones(5, np.float16)}


def make_grads(step: int):
    rng = np.random.default_rng(100 + step)
    return {
        "w": rng.normal(size=(3, 4)),
        "b": np.asarray(rng.normal()),
        "h": rng.normal(size=5).astype(np.float16),
    }


def snapshot(optimizer, params):
    return {k: v.copy() for k, v in params.items()}, {
        k: v.copy() for k, v in optimizer.state_dict().items()
    }


def assert_unchanged(optimizer, params, before):
    before_params, before_state = before
    for key, value in before_params.items():
        np.testing.assert_array_equal(params[key], value)
    after_state = optimizer.state_dict()
    assert set(after_state) == set(before_state)
    for key, value in before_state.items():
        np.testing.assert_array_equal(after_state[key], value)


def test_updates_in_place_and_matches_oracle():
    theta0 = np.random.default_rng(0).normal(size=7)
    grads = gradient_sequence((7,), 50, seed=4, kind="noisy")
    param = theta0.copy()
    optimizer = padam_core.Padam([param], lr=0.05, weight_decay=0.01, variant="torch")
    for g in grads:
        optimizer.step([g])
    expected = oracle_trajectory(theta0, grads, Config(lr=0.05, weight_decay=0.01, variant="torch"))
    assert relative_error(param, expected[-1]) <= 1e-12
    assert optimizer.count == 50


def test_learning_rate_schedule_is_called_with_the_step():
    seen = []
    optimizer = padam_core.Padam([np.ones(2)], lr=lambda step: seen.append(step) or 0.1 / step)
    for _ in range(3):
        optimizer.step([np.ones(2)])
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_checkpoint_round_trip_continues_bitwise(tmp_path, suffix):
    pytest.importorskip("safetensors") if suffix == ".safetensors" else None
    straight = make_params()
    reference = padam_core.Padam(straight, lr=0.01)
    for step in range(10):
        reference.step(make_grads(step))

    resumed = make_params()
    first = padam_core.Padam(resumed, lr=0.01)
    for step in range(4):
        first.step(make_grads(step))
    path = tmp_path / f"state{suffix}"
    first.save(path)
    second = padam_core.Padam(resumed, lr=0.01)
    second.load(path)
    assert second.count == 4
    assert second.state.exp_avg["h"].dtype == np.float32  # half parameter, float32 state
    for step in range(4, 10):
        second.step(make_grads(step))
    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key])


def _saved_state(tmp_path, suffix=".npz", **kwargs):
    params = make_params()
    optimizer = padam_core.Padam(params, **kwargs)
    optimizer.step(make_grads(0))
    path = tmp_path / f"state{suffix}"
    optimizer.save(path)
    return path, optimizer.state_dict()


def _write_npz(path, flat):
    meta = {"format": "padam_core.Padam", "version": "1", "hyperparameters": "{}"}
    padam_core.checkpoint.save_arrays(path, flat, meta)


def _corruptions(flat):
    yield "missing entries ['exp_avg/w']", {k: v for k, v in flat.items() if k != "exp_avg/w"}
    yield "unexpected entries ['extra/w']", {**flat, "extra/w": np.ones(1)}
    yield "has shape (4, 3)", {**flat, "exp_avg/w": np.ones((4, 3))}
    yield "dtype float32", {**flat, "exp_avg/w": flat["exp_avg/w"].astype(np.float32)}
    yield "dtype float16", {**flat, "exp_avg_sq/h": flat["exp_avg_sq/h"].astype(np.float16)}
    yield "Invalid 'step' entry", {**flat, "step": np.asarray(-1)}
    yield "Invalid 'step' entry", {**flat, "step": np.asarray(1.5)}
    yield "invalid values", {**flat, "exp_avg/w": np.full((3, 4), np.nan)}
    yield "invalid values", {**flat, "exp_avg_sq/w": -np.ones((3, 4))}


def test_mismatched_or_corrupt_state_is_rejected_and_nothing_changes(tmp_path):
    _, flat = _saved_state(tmp_path)
    params = make_params()
    optimizer = padam_core.Padam(params)
    for step in range(3):
        optimizer.step(make_grads(step))
    before = snapshot(optimizer, params)
    for expected_message, bad in _corruptions(flat):
        bad_path = tmp_path / "bad.npz"
        _write_npz(bad_path, bad)
        with pytest.raises(ValueError, match=re.escape(expected_message)):
            optimizer.load(bad_path)
        assert_unchanged(optimizer, params, before)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_unreadable_files_are_rejected_and_nothing_changes(tmp_path, suffix):
    path, _ = _saved_state(tmp_path, suffix)
    params = make_params()
    optimizer = padam_core.Padam(params)
    optimizer.step(make_grads(0))
    before = snapshot(optimizer, params)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(path.read_bytes()[:100])
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match="Cannot read Padam state"):
            optimizer.load(bad)
        assert_unchanged(optimizer, params, before)
    with pytest.raises(FileNotFoundError):
        optimizer.load(tmp_path / f"missing{suffix}")


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, step=np.asarray(1), payload=np.array([object()], dtype=object))
    optimizer = padam_core.Padam([np.ones(2)])
    with pytest.raises(ValueError, match="Cannot read Padam state"):
        optimizer.load(path)


def test_foreign_file_and_amsgrad_mismatch_are_rejected(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, step=np.asarray(1))
    optimizer = padam_core.Padam(make_params())
    with pytest.raises(ValueError, match=r"is not a padam_core\.Padam state file"):
        optimizer.load(foreign)
    path, _ = _saved_state(tmp_path, amsgrad=False)
    with pytest.raises(ValueError, match="missing entries"):
        optimizer.load(path)


def test_bad_gradients_are_rejected_and_nothing_changes():
    params = make_params()
    optimizer = padam_core.Padam(params)
    optimizer.step(make_grads(0))
    before = snapshot(optimizer, params)
    good = make_grads(1)
    bad_cases = [
        ("has shape", {**good, "w": np.ones((4, 3))}),
        ("has dtype float32", {**good, "w": good["w"].astype(np.float32)}),
        ("holds NaN or Inf", {**good, "b": np.asarray(np.inf)}),
        ("holds NaN or Inf", {**good, "h": np.full(5, np.nan, np.float16)}),
        ("missing", {k: v for k, v in good.items() if k != "b"}),
    ]
    for message, grads in bad_cases:
        with pytest.raises(ValueError, match=message):
            optimizer.step(grads)
        assert_unchanged(optimizer, params, before)
    with pytest.raises(ValueError, match="Invalid lr value"):
        padam_core.Padam(params, lr=lambda step: -1.0).step(good)
    assert_unchanged(optimizer, params, before)


def test_invalid_hyperparameters_and_params_are_rejected():
    with pytest.raises(ValueError, match=r"Invalid partial value: 0\.6"):
        padam_core.Padam([np.ones(2)], partial=0.6)
    with pytest.raises(TypeError, match="list or a dict"):
        padam_core.Padam(np.ones(2))
    with pytest.raises(TypeError, match="not a writable array"):
        padam_core.Padam([1.0])
