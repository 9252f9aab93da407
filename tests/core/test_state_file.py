"""padam_core.state_file (the format, the checks, the atomic writer) and padam_core.Padam's
``.safetensors`` save/load in it."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import padam_core
from padam_core import state_file
from padam_core.state_file import TensorSpec, read_state_file, write_state_file
from tests.conformance.state_files import malformed_files, read_raw

pytest.importorskip("safetensors")


def make_params(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=()),
            "h": np.ones(5, np.float16)}  # fmt: skip


def make_grads(step: int):
    rng = np.random.default_rng(100 + step)
    return {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.asarray(rng.normal()),
            "h": rng.normal(size=5).astype(np.float16)}  # fmt: skip


def snapshot(optimizer, params):
    return {k: v.copy() for k, v in params.items()}, {
        k: v.copy() for k, v in optimizer.state_dict().items()
    }


def assert_unchanged(optimizer, params, before):
    for key, value in before[0].items():
        np.testing.assert_array_equal(params[key], value)
    after = optimizer.state_dict()
    assert set(after) == set(before[1])
    for key, value in before[1].items():
        assert after[key].dtype == value.dtype
        np.testing.assert_array_equal(after[key], value)


def saved(tmp_path, name="state.safetensors", steps=2, **kwargs):
    params = make_params(seed=3)
    optimizer = padam_core.Padam(params, **kwargs)
    for step in range(steps):
        optimizer.step(make_grads(step))
    path = tmp_path / name
    optimizer.save(path)
    return path, optimizer


def test_padam_writes_the_shared_format_with_its_state_dtypes(tmp_path):
    path, optimizer = saved(tmp_path, variant="optax")
    tensors, metadata = read_raw(path)
    assert metadata["format"] == "padam.state" and metadata["variant"] == "optax"
    assert metadata["names"] == '["w", "b", "h"]'
    assert tensors["step"].dtype == np.int64 and int(tensors["step"]) == 2
    assert tensors["state/1/exp_avg"].dtype == np.float64  # float64 parameter
    assert tensors["state/2/exp_avg"].dtype == np.float32  # float16 parameter, float32 state
    np.testing.assert_array_equal(tensors["state/0/max_exp_avg_sq"],
                                  optimizer.state.max_exp_avg_sq["w"])  # fmt: skip


def test_padam_rejects_every_malformed_file_and_changes_nothing(tmp_path):
    good, _ = saved(tmp_path, name="good.safetensors")
    params = make_params()
    optimizer = padam_core.Padam(params)
    for step in range(3):
        optimizer.step(make_grads(step))
    before = snapshot(optimizer, params)
    for message, path in malformed_files(good, tmp_path, variant="reference"):
        with pytest.raises(
            ValueError, match=r"Cannot read Padam state from .*" + re.escape(message)
        ):
            optimizer.load(path)
        assert_unchanged(optimizer, params, before)
    optimizer.load(good)
    assert optimizer.count == 2


def test_reference_and_torch_variants_share_v_hat_optax_does_not(tmp_path):
    path, _ = saved(tmp_path, variant="reference")
    padam_core.Padam(make_params(), variant="torch").load(path)  # same meaning of v_hat
    with pytest.raises(ValueError, match="variant 'optax' keeps the max of v / "):
        padam_core.Padam(make_params(), variant="optax").load(path)
    # Without amsgrad there is no v_hat, and m, v mean the same in every variant.
    path, _ = saved(tmp_path, name="adam.safetensors", variant="optax", amsgrad=False)
    padam_core.Padam(make_params(), variant="reference", amsgrad=False).load(path)


def test_writer_refuses_state_the_reader_would_refuse(tmp_path):
    good = {"exp_avg": [np.zeros(2)], "exp_avg_sq": [np.zeros(2)], "max_exp_avg_sq": None}
    bad_cases = [
        ("holds NaN or Inf", {**good, "exp_avg": [np.full(2, np.nan)]}),
        ("negative values", {**good, "exp_avg_sq": [-np.ones(2)]}),
        ("has shape (3,)", {**good, "exp_avg_sq": [np.zeros(3)]}),
        ("has dtype complex128", {**good, "exp_avg": [np.zeros(2, complex)],
                                  "exp_avg_sq": [np.zeros(2, complex)]}),
    ]  # fmt: skip
    for message, moments in bad_cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            write_state_file(tmp_path / "s.safetensors", step=1, **moments, names=["x"],
                             variant="reference", amsgrad=False)  # fmt: skip
    with pytest.raises(ValueError, match="step must be an integer"):
        write_state_file(tmp_path / "s.safetensors", step=-1, **good, names=["x"],
                         variant="reference", amsgrad=False)  # fmt: skip
    with pytest.raises(ValueError, match="exactly when amsgrad=True"):
        write_state_file(tmp_path / "s.safetensors", step=1, **good, names=["x"],
                         variant="reference", amsgrad=True)  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path, optimizer = saved(tmp_path)
    old = path.read_bytes()
    import safetensors.numpy

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    optimizer.step(make_grads(5))
    with pytest.raises(OSError, match="disk full"):
        optimizer.save(path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["state.safetensors"]


def test_bfloat16_state_round_trips(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    exp_avg = np.asarray([1.5, -2.0], ml_dtypes.bfloat16)
    path = tmp_path / "bf16.safetensors"
    write_state_file(path, step=7, exp_avg=[exp_avg], exp_avg_sq=[np.ones(2, np.float32)],
                     max_exp_avg_sq=[np.ones(2, np.float32)], names=["mu"], variant="optax",
                     amsgrad=True)  # fmt: skip
    spec = TensorSpec("mu", (2,), "float32", "bfloat16")
    loaded = read_state_file(path, expected=[spec], variant="optax", amsgrad=True)
    assert loaded.exp_avg[0].dtype == exp_avg.dtype
    np.testing.assert_array_equal(loaded.exp_avg[0], exp_avg)
    with pytest.raises(ValueError, match=r"dtype bfloat16, expected .* and float32"):
        read_state_file(path, expected=[TensorSpec("mu", (2,), "float32")], variant="optax",
                        amsgrad=True)  # fmt: skip


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        padam_core.Padam(make_params()).load(tmp_path / "missing.safetensors")


def test_module_names_its_format():
    assert state_file.FORMAT == "padam.state" and state_file.FORMAT_VERSION == 1
