"""``padam compare --framework keras`` end to end, in its own process (Keras picks its backend
once per process, and TensorFlow stays out of the main test process)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("padam_keras")

ROOT = Path(__file__).resolve().parents[2]


def test_keras_comparison_and_padam_at_one_half_is_keras_amsgrad(tmp_path):
    """numerics.md: Padam p=1/2 (reference variant, amsgrad) = keras Adam(amsgrad=True); through the
    whole loop (same seed: same weights, same batches) the two runs agree."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")]),
    }
    command = [
        sys.executable,
        "-m",
        "padam_compare",
        "compare",
        "--framework",
        "keras",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "3",
        "--train-size",
        "256",
        "--test-size",
        "64",
        "--batch-size",
        "64",
        "--seeds",
        "0",
        "--no-progress",
        "--optimizers",
        "amsgrad",
        "padam",
        "--partials",
        "1/2",
        "--lr",
        "padam=0.001",
        "--set",
        "padam.eps=1e-8",
        "--weight-decay",
        "0",
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "digits · mlp · keras" in done.stdout
    with (out / "epochs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_optimizer: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_optimizer.setdefault(row["optimizer"], []).append(row)
    amsgrad, padam = by_optimizer["AMSGrad"], by_optimizer["Padam p=1/2"]
    assert len(amsgrad) == len(padam) == 3
    assert [float(row["lr"]) for row in padam] == pytest.approx([0.001, 0.0001, 0.00001])
    for a, p in zip(amsgrad, padam, strict=True):
        assert float(p["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-4)
        assert float(p["test_loss"]) == pytest.approx(float(a["test_loss"]), rel=1e-4)
    assert (out / "curves.png").stat().st_size > 10_000
