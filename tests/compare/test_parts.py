"""Pieces of ``padam compare``: augmentation, summary statistics, table, embedded datasets."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from padam_compare.data import Dataset, load_digits
from padam_compare.report import format_table
from padam_compare.results import EpochRecord, RunResult, Statistic, summarize

torch = pytest.importorskip("torch")


def record(epoch: int, loss: float, accuracy: float) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        lr=0.1,
        train_loss=loss,
        train_accuracy=accuracy,
        test_loss=loss,
        test_accuracy=accuracy,
        seconds=1.0,
    )


def test_crops_and_flips_are_windows_of_the_padded_image():
    from padam_compare.torch_backend import _Batches

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(16, 3, 32, 32), dtype=np.uint8)
    dataset = Dataset(
        "fake",
        images,
        np.zeros(16, np.int64),
        images[:2],
        np.zeros(2, np.int64),
        num_classes=10,
        scale=255.0,
        is_image=True,
    )
    batches = _Batches(dataset, torch.device("cpu"), augment=True)
    generator = torch.Generator().manual_seed(0)
    out = batches._crop_and_flip(torch.from_numpy(images).float(), generator).numpy()
    padded = np.pad(images.astype(np.float32), ((0, 0), (0, 0), (4, 4), (4, 4)))
    flips = 0
    for index in range(16):
        matches = [
            (top, left, flip)
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
            if np.array_equal(
                out[index],
                (lambda w: w[..., ::-1] if flip else w)(
                    padded[index, :, top : top + 32, left : left + 32]
                ),
            )
        ]
        assert matches, f"sample {index} is not a crop of its padded image"
        flips += matches[0][2]
    assert 0 < flips < 16  # both flipped and unflipped samples occur


def test_no_augmentation_without_the_flag():
    from padam_compare.torch_backend import _Batches

    images = np.full((2, 3, 32, 32), 255, np.uint8)
    mean = np.full((1, 3, 1, 1), 0.5, np.float32)
    std = np.full((1, 3, 1, 1), 0.25, np.float32)
    dataset = Dataset(
        "fake",
        images,
        np.zeros(2, np.int64),
        images,
        np.zeros(2, np.int64),
        num_classes=10,
        scale=255.0,
        mean=mean,
        std=std,
        is_image=True,
    )
    batches = _Batches(dataset, torch.device("cpu"), augment=False)
    out = batches.prepare(torch.from_numpy(images), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(out.numpy(), 2.0)  # (1 - 0.5) / 0.25


def test_summary_over_seeds():
    runs = [
        RunResult(
            "A",
            "adam",
            0,
            {"lr": 0.001},
            [record(1, 0.5, 0.6), record(2, 0.05, 0.8), record(3, 0.04, 0.7)],
        ),
        RunResult(
            "A",
            "adam",
            1,
            {"lr": 0.001},
            [record(1, 0.4, 0.5), record(2, 0.2, 0.9), record(3, 0.08, 0.85)],
        ),
        RunResult(
            "B",
            "sgd",
            0,
            {"lr": 0.1},
            [record(1, 2.0, 0.1), record(2, float("nan"), 0.1)],
            diverged_at=2,
        ),
    ]
    a, b = summarize(runs, target_loss=0.1)
    assert a.final_train_loss.mean == pytest.approx(0.06)
    assert a.final_train_loss.std == pytest.approx(np.std([0.04, 0.08], ddof=1))
    assert a.best_test_accuracy.mean == pytest.approx(0.85)
    assert a.final_test_accuracy.mean == pytest.approx(0.775)
    assert (a.epochs_to_target.mean, a.epochs_to_target.count) == (2.5, 2)
    assert b.diverged == 1 and b.epochs_to_target.count == 0
    table = format_table([a, b], target_loss=0.1)
    assert "B (1/1 diverged)" in table and "not reached" in table
    assert "77.50 ± 10.61" in table
    assert "| A |" in format_table([a, b], 0.1, markdown=True)


def test_statistic_of_one_value_has_zero_spread():
    statistic = Statistic.of([3.0])
    assert (statistic.mean, statistic.std, statistic.count) == (3.0, 0.0, 1)
    assert Statistic.of([]).format() == "—" and math.isnan(Statistic.of([]).mean)


def test_digits_dataset_is_standardized_and_split():
    dataset = load_digits()
    assert dataset.x_train.shape == (1437, 1, 8, 8) and dataset.x_test.shape == (360, 1, 8, 8)
    assert abs(float(dataset.x_train.mean())) < 1e-5
    assert set(np.unique(dataset.y_train)) == set(range(10))


def _run_in_a_fresh_process(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a new interpreter with this checkout on its path; it must exit 0."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "adapters")])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_torch_comparison_imports_neither_jax_nor_flax():
    """The JAX backend (and flax) load only with --framework jax: a torch user needs neither."""
    code = (
        "import sys\n"
        "from padam_compare import cli, runner\n"
        "runner.BACKENDS['torch']()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'optax'}))\n"
    )
    done = _run_in_a_fresh_process(code)
    assert done.stdout.strip() == "[]"


def test_jax_comparison_without_flax_names_the_extra_that_brings_it():
    """flax is in the compare-jax extra, not compare: the error says which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['flax'] = None  # as if flax were not installed: importing it fails\n"
        "from padam_compare import runner\n"
        "from padam_compare.config import ConfigError\n"
        "try:\n"
        "    runner.BACKENDS['jax']()\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    done = _run_in_a_fresh_process(code)
    assert "flax" in done.stdout and "padam[compare-jax]" in done.stdout, done.stdout
