"""``padam compare`` end to end on tiny settings: every output written and readable."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from padam_compare.cli import main
from padam_compare.config import build_config
from padam_compare.report import OUTPUT_FILES
from padam_compare.runner import run_comparison

pytest.importorskip("torch")
pytest.importorskip("padam_torch")

TINY = [
    "--epochs",
    "2",
    "--train-size",
    "192",
    "--test-size",
    "96",
    "--batch-size",
    "64",
    "--no-progress",
    "--threads",
    "1",
]


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_default_dataset_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "compare",
        *TINY,
        "--seeds",
        "0",
        "1",
        "--partials",
        "1/8",
        "1/4",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    labels = ["SGD-momentum", "Adam", "AMSGrad", "AdamW", "Padam p=1/8", "Padam p=1/4"]
    for label in labels:
        assert label in stdout
    assert str(out / "curves.png") in stdout

    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUT_FILES)

    rows = read_csv(out / "epochs.csv")
    assert len(rows) == len(labels) * 2 * 2  # optimizers x seeds x epochs
    assert {row["optimizer"] for row in rows} == set(labels)
    for row in rows:
        assert math.isfinite(float(row["train_loss"]))
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
    padam_rows = [row for row in rows if row["optimizer"] == "Padam p=1/4"]
    assert {float(row["partial"]) for row in padam_rows} == {0.25}
    # The paper's learning rates: 0.1 for SGD and Padam, 0.001 for Adam.
    first_lr = {row["optimizer"]: float(row["lr"]) for row in rows if row["epoch"] == "1"}
    assert first_lr["SGD-momentum"] == 0.1 and first_lr["Padam p=1/8"] == 0.1
    assert first_lr["Adam"] == 0.001

    summary = read_csv(out / "summary.csv")
    assert [row["optimizer"] for row in summary] == labels
    by_label = {row["optimizer"]: row for row in summary}
    for label in labels:
        losses = [
            float(r["train_loss"]) for r in rows if r["optimizer"] == label and r["epoch"] == "2"
        ]
        np.testing.assert_allclose(
            float(by_label[label]["final_train_loss_mean"]), np.mean(losses), rtol=1e-12
        )
        np.testing.assert_allclose(
            float(by_label[label]["final_train_loss_std"]), np.std(losses, ddof=1), rtol=1e-9
        )

    document = json.loads((out / "results.json").read_text())
    assert document["config"]["dataset"] == "mnist1d"
    assert document["config"]["milestones"] == [1]  # the paper's 1/2 and 3/4, of 2 epochs
    assert len(document["runs"]) == len(labels) * 2
    assert [len(run["epochs"]) for run in document["runs"]] == [2] * len(labels) * 2
    assert document["environment"]["train_examples"] == 192
    assert document["command"].startswith("padam compare --epochs 2")
    # The lr really was divided by 10 after the milestone.
    assert [e["lr"] for e in document["runs"][0]["epochs"]] == pytest.approx([0.1, 0.01])

    from matplotlib.image import imread

    image = imread(out / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 800
    assert image.std() > 0.01  # not a blank canvas

    markdown = (out / "summary.md").read_text()
    assert "| Padam p=1/8 |" in markdown and "![curves](curves.png)" in markdown


def test_same_seed_same_numbers(tmp_path):
    flags = {
        "epochs": 2,
        "train_size": 128,
        "test_size": 64,
        "progress": False,
        "optimizers": ["padam"],
        "seeds": [3],
        "threads": 1,
        "dataset": "digits",
        "model": "mlp",
    }
    first = run_comparison(build_config(flag_values=dict(flags)))
    second = run_comparison(build_config(flag_values=dict(flags)))
    losses = [[r.train_loss for r in run.epochs] for run in (first.runs[0], second.runs[0])]
    assert losses[0] == losses[1]


def test_padam_at_one_half_torch_variant_is_amsgrad(tmp_path):
    """numerics.md: Padam p=1/2, torch-style, amsgrad = torch.optim.Adam(amsgrad=True). Through the
    whole harness (same seed: same weights, same batches) the two runs must agree."""
    config = build_config(
        flag_values={
            "epochs": 2,
            "train_size": 128,
            "test_size": 64,
            "progress": False,
            "threads": 1,
            "optimizers": ["amsgrad", "padam"],
            "partials": [0.5],
            "seeds": [0],
            "dataset": "digits",
            "model": "mlp",
        },
        optimizer_overrides={"padam": {"lr": 0.001, "variant": "torch"}},
    )
    amsgrad, padam = run_comparison(config).runs
    for a, p in zip(amsgrad.epochs, padam.epochs, strict=True):
        assert p.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        assert p.test_loss == pytest.approx(a.test_loss, rel=1e-5)
    # ...while the paper's Padam (p = 1/8, lr 0.1, reference variant) is another optimizer.
    config = build_config(
        flag_values={
            "epochs": 2,
            "train_size": 128,
            "test_size": 64,
            "progress": False,
            "threads": 1,
            "optimizers": ["padam"],
            "seeds": [0],
            "dataset": "digits",
            "model": "mlp",
        }
    )
    (paper_padam,) = run_comparison(config).runs
    assert paper_padam.epochs[-1].train_loss != pytest.approx(padam.epochs[-1].train_loss)


@pytest.mark.parametrize("model", ["vgg16", "resnet18", "wrn16_4"])
def test_paper_presets_train_on_tiny_cifar(model, cifar10_dir, tmp_path, capsys):
    directory, _ = cifar10_dir
    preset = {"vgg16": "paper-vgg16", "resnet18": "paper-resnet18", "wrn16_4": "paper-wrn16-4"}[
        model
    ]
    out = tmp_path / "out"
    argv = [
        "compare",
        "--preset",
        preset,
        "--data-dir",
        str(directory),
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--test-size",
        "4",
        "--optimizers",
        "padam",
        "sgd",
        "--no-progress",
        "--threads",
        "1",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    assert document["config"]["model"] == model and document["config"]["augment"] is True
    assert document["environment"]["train_examples"] == 20
    assert document["class_names"][-1] == "truck"
    assert [run["label"] for run in document["runs"]] == ["Padam p=1/8", "SGD-momentum"]
    assert all(math.isfinite(run["epochs"][0]["train_loss"]) for run in document["runs"])


def test_interrupted_comparison_keeps_the_finished_runs(tmp_path, monkeypatch, capsys):
    from padam_compare.torch_backend import TorchBackend

    original = TorchBackend.train
    calls = []

    def train_then_interrupt(self, run, seed, on_epoch=None):
        calls.append(run.label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, run, seed, on_epoch)

    monkeypatch.setattr(TorchBackend, "train", train_then_interrupt)
    out = tmp_path / "out"
    argv = [
        "compare",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        *TINY,
        "--seeds",
        "0",
        "--optimizers",
        "sgd",
        "padam",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 130
    assert f"the 1 finished runs are in {out}" in capsys.readouterr().err
    rows = read_csv(out / "epochs.csv")
    assert {row["optimizer"] for row in rows} == {"SGD-momentum"} and len(rows) == 2
    assert (out / "curves.png").is_file()
