"""``padam compare --framework jax``: optax baselines and padam_jax in a plain-JAX loop."""

from __future__ import annotations

import csv
import math

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("padam_jax")

from padam_compare.cli import main
from padam_compare.config import build_config
from padam_compare.runner import run_comparison

TINY = {
    "epochs": 2,
    "train_size": 128,
    "test_size": 64,
    "progress": False,
    "seeds": [0],
    "dataset": "digits",
    "model": "mlp",
    "framework": "jax",
    "batch_size": 32,
}


def test_jax_end_to_end_writes_every_file(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "compare",
        "--framework",
        "jax",
        "--epochs",
        "2",
        "--train-size",
        "128",
        "--test-size",
        "64",
        "--batch-size",
        "64",
        "--seeds",
        "0",
        "1",
        "--no-progress",
        "--optimizers",
        "sgd",
        "padam",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    assert "mnist1d · cnn1d · jax" in capsys.readouterr().out
    with (out / "epochs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 2
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)
    assert (out / "curves.png").stat().st_size > 10_000


def test_jax_padam_at_one_half_optax_variant_is_optax_amsgrad():
    """numerics.md: Padam p=1/2 optax-style = optax.amsgrad; through the whole loop, same seed."""
    config = build_config(
        flag_values={**TINY, "optimizers": ["amsgrad", "padam"], "partials": [0.5]},
        optimizer_overrides={"padam": {"lr": 0.001, "variant": "optax"}},
    )
    amsgrad, padam = run_comparison(config).runs
    for a, p in zip(amsgrad.epochs, padam.epochs, strict=True):
        assert p.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        assert p.test_loss == pytest.approx(a.test_loss, rel=1e-5)


def test_jax_schedule_divides_the_lr_at_the_milestones():
    config = build_config(
        flag_values={**TINY, "epochs": 3, "milestones": [1, 2], "optimizers": ["sgd"]}
    )
    (run,) = run_comparison(config).runs
    assert [record.lr for record in run.epochs] == pytest.approx([0.1, 0.01, 0.001])


def test_jax_has_no_cifar_networks_yet(cifar10_dir, capsys):
    directory, _ = cifar10_dir
    code = main(
        [
            "compare",
            "--framework",
            "jax",
            "--preset",
            "paper-resnet18",
            "--data-dir",
            str(directory),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "resnet18 is torch only for now" in capsys.readouterr().err
