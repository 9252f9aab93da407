"""Tiny CIFAR datasets written in CIFAR's own format (pickled dicts), for the tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar_batch(
    path: Path, images: np.ndarray, labels: list[int], labels_key: str, bytes_keys: bool = True
) -> None:
    """One batch file in CIFAR's own format: a pickled dict with 'data' (N, 3072) uint8.

    The official files were written by Python 2 (protocol 2, keys that unpickle as bytes).
    """
    record = {
        "data": images.reshape(len(images), -1),
        labels_key: labels,
        "batch_label": "testing batch",
    }
    if bytes_keys:
        record = {key.encode(): value for key, value in record.items()}
    path.write_bytes(pickle.dumps(record, protocol=2))


def make_cifar10(
    directory: Path, per_batch: int = 4, test: int = 6, seed: int = 0, bytes_keys: bool = True
) -> dict[str, np.ndarray]:
    """A tiny CIFAR-10 (five training batches, a test batch, batches.meta) in ``directory``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for index in range(1, 6):
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [int(label) for label in rng.integers(0, 10, size=per_batch)]
        write_cifar_batch(directory / f"data_batch_{index}", images, labels, "labels", bytes_keys)
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, size=(test, 3, 32, 32), dtype=np.uint8)
    test_labels = [int(label) for label in rng.integers(0, 10, size=test)]
    write_cifar_batch(directory / "test_batch", test_images, test_labels, "labels", bytes_keys)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    if bytes_keys:
        meta = {key.encode(): value for key, value in meta.items()}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {
        "x_train": np.concatenate(train_images),
        "y_train": np.asarray(train_labels),
        "x_test": test_images,
        "y_test": np.asarray(test_labels),
    }
