"""Regression tests for issue 10, written from its description: ``padam compare``'s causes."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest

from padam_compare.cli import main
from padam_compare.config import ConfigError, build_config
from padam_compare.data import DataError, load_cifar, restricted_load
from tests.compare.helpers import make_cifar10

# ---- cause 11: the CIFAR reader ---------------------------------------------------------------


def _nested_list_record(depth: int) -> bytes:
    """{b'data': [[[...]]] (``depth`` levels), b'labels': [0]} at protocol 2, without recursion."""
    nested = b"]" * depth + b"a" * (depth - 1)
    return b"\x80\x02}(C\x04data" + nested + b"C\x06labels]K\x00au."


def test_cause11_a_tiny_file_cannot_ask_for_a_huge_allocation(tmp_path):
    # _reconstruct(ndarray, (10**9,), b'b'): 1 GB for a file of a few dozen bytes.
    bomb = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"J\x00\xca\x9a\x3b\x85C\x01b\x87R.")  # fmt: skip
    path = tmp_path / "bomb"
    path.write_bytes(bomb)
    assert path.stat().st_size < 120
    tracemalloc.start()
    try:
        with pytest.raises(pickle.UnpicklingError, match="placeholder of shape"):
            restricted_load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_cause11_a_deeply_nested_list_is_a_data_error_not_a_traceback(tmp_path, capsys):
    directory = tmp_path / "cifar"
    make_cifar10(directory)
    (directory / "data_batch_1").write_bytes(_nested_list_record(100_000))
    with pytest.raises(DataError, match="data_batch_1: 'data' must be a NumPy array"):
        load_cifar("cifar10", directory)
    code = main(["compare", "--dataset", "cifar10", "--data-dir", str(directory), "--model",
                 "mlp", "--epochs", "1", "--output-dir", str(tmp_path / "out"),
                 "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "data_batch_1" in captured.err and "Traceback" not in captured.err


def test_cause11_labels_pickled_as_numpy_scalars_are_read(tmp_path):
    directory = tmp_path / "cifar"
    expected = make_cifar10(directory)
    for name in ("data_batch_1", "test_batch"):
        record = restricted_load(directory / name)
        record[b"labels"] = [np.int64(label) for label in record[b"labels"]]
        (directory / name).write_bytes(pickle.dumps(record, protocol=2))
    dataset = load_cifar("cifar10", directory)
    np.testing.assert_array_equal(dataset.y_test, expected["y_test"])


def test_cause11_empty_bytes_at_protocol_2_are_read(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"x": b""}, protocol=2))
    record = restricted_load(path)
    assert record[b"x"] == b"" and record[b"data"].shape == (0, 3072)
    with pytest.raises(pickle.UnpicklingError):  # bytes(...) with arguments stays refused
        path.write_bytes(b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.")
        restricted_load(path)


# ---- cause 12: TOML is as strict as the flags ---------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr_decay": float("inf")}, "lr_decay must be a finite number"),
        ({"lr_decay": float("nan")}, "lr_decay must be a finite number"),
        ({"threads": 10**12}, "threads must be between 1 and"),
        ({"weight_decay": 1e300}, "weight_decay must be a finite number"),
        ({"seeds": [2**70]}, "seeds must lie in"),
        ({"optimizer": {"padam": {"lr": 1e300}}}, "optimizer padam setting lr"),
        ({"optimizer": {"adam": {"eps": 0.0}}}, "optimizer adam setting eps must be > 0"),
    ],
)
def test_cause12_toml_values_are_checked_as_flags_are(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(file_values=values)


@pytest.mark.parametrize(
    "argv",
    [["--lr-decay", "inf"], ["--threads", str(10**12)], ["--weight-decay", "1e300"],
     ["--seeds", str(2**70)]],
)  # fmt: skip
def test_cause12_the_same_values_as_flags_are_usage_errors(argv, capsys, tmp_path):
    code = main(["compare", *argv, "--output-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
