"""The CIFAR reader: CIFAR's own pickle format, both layouts, restricted unpickling, errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from padam_compare.data import DataError, RestrictedUnpickler, load_cifar, restricted_load
from tests.compare.helpers import make_cifar10, write_cifar_batch


def test_reads_cifar10_batches_exactly(cifar10_dir):
    directory, written = cifar10_dir
    dataset = load_cifar("cifar10", directory)
    np.testing.assert_array_equal(dataset.x_train, written["x_train"])
    np.testing.assert_array_equal(dataset.y_train, written["y_train"])
    np.testing.assert_array_equal(dataset.x_test, written["x_test"])
    np.testing.assert_array_equal(dataset.y_test, written["y_test"])
    assert dataset.x_train.shape == (20, 3, 32, 32) and dataset.x_train.dtype == np.uint8
    assert dataset.num_classes == 10
    assert dataset.class_names[0] == "airplane" and len(dataset.class_names) == 10
    # Per-channel statistics of the training images, in [0, 1] units.
    expected_mean = written["x_train"].transpose(1, 0, 2, 3).reshape(3, -1).mean(1) / 255
    np.testing.assert_allclose(dataset.mean.ravel(), expected_mean, rtol=1e-5)


def test_reads_torchvision_layout_and_str_keys(tmp_path):
    written = make_cifar10(tmp_path / "cifar-10-batches-py", bytes_keys=False, seed=3)
    dataset = load_cifar("cifar10", tmp_path)  # the parent directory, as torchvision's root
    np.testing.assert_array_equal(dataset.x_test, written["x_test"])
    np.testing.assert_array_equal(dataset.y_train, written["y_train"])


def test_reads_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(root / "train", train, [0, 99, 50, 7, 3], "fine_labels")
    write_cifar_batch(root / "test", test, [98, 1], "fine_labels")
    names = [f"class{index}".encode() for index in range(100)]
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}, protocol=2))
    dataset = load_cifar("cifar100", tmp_path)
    assert dataset.num_classes == 100
    np.testing.assert_array_equal(dataset.y_train, [0, 99, 50, 7, 3])
    np.testing.assert_array_equal(dataset.x_train, train)
    assert dataset.class_names[99] == "class99"


class _RunsShell:
    """An object whose unpickling would call os.system (the classic pickle exploit)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_refuses_a_pickle_that_would_run_a_command(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2)
    path = tmp_path / "evil"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|os|nt)\."):
        restricted_load(path)
    assert not marker.exists()


def test_malicious_batch_in_a_cifar_directory_is_a_data_error(cifar10_dir, tmp_path):
    directory, _ = cifar10_dir
    marker = tmp_path / "pwned"
    record = {b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}
    (directory / "data_batch_3").write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3 is not a valid CIFAR batch: refusing"):
        load_cifar("cifar10", directory)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("numpy", "load"),
        ("numpy.lib.npyio", "load"),
    ],
)
def test_unpickler_allows_only_numpy_array_constructors(module, name):
    unpickler = RestrictedUnpickler(__import__("io").BytesIO(b""))
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        unpickler.find_class(module, name)
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"cifar10 data directory does not exist: .*nowhere"):
        load_cifar("cifar10", missing)


def test_directory_without_batches_lists_the_expected_files(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    expected = r"data_batch_1, data_batch_2.*test_batch.*cifar-10-batches-py"
    with pytest.raises(DataError, match=expected):
        load_cifar("cifar10", tmp_path)


def test_a_file_instead_of_a_directory(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        load_cifar("cifar100", path)


@pytest.mark.parametrize("damage", ["truncate", "text", "empty"])
def test_unreadable_batch_names_the_file(cifar10_dir, damage):
    directory, _ = cifar10_dir
    path = directory / "test_batch"
    contents = {
        "truncate": path.read_bytes()[:100],
        "text": b"hello, not a pickle\n",
        "empty": b"",
    }[damage]
    path.write_bytes(contents)
    with pytest.raises(DataError, match=r"test_batch is not a valid CIFAR batch"):
        load_cifar("cifar10", directory)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2, 3], "it holds a list"),
        ({b"labels": [0]}, "no 'data' entry"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "must be uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "must hold 2 integer"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must lie in 0..9"),
    ],
)
def test_malformed_batch_contents(cifar10_dir, record, message):
    directory, _ = cifar10_dir
    (directory / "data_batch_2").write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(DataError, match=message):
        load_cifar("cifar10", directory)


def test_arrays_pickled_with_protocol_5_load(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = Path(tmp_path / "p5")
    path.write_bytes(pickle.dumps({"data": array}, protocol=5))
    np.testing.assert_array_equal(restricted_load(path)["data"], array)
