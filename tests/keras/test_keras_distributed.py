"""Padam under the engines Keras users distribute with, each in its own process (the device
count must be fixed before TensorFlow or JAX starts): results equal the one-device run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.keras.keras_testing import BACKEND

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _run_worker(engine: str, extra_env: dict[str, str]) -> dict:
    env = dict(os.environ)
    env.update(extra_env)
    env["KERAS_BACKEND"] = BACKEND
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "adapters"), env.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, str(WORKER), engine],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's engine")
@pytest.mark.parametrize("guard", ["", "-guard"])
def test_mirrored_strategy_over_two_cpus_matches_one_device(guard: str) -> None:
    result = _run_worker("tensorflow-mirrored" + guard, {})
    assert result["skipped"] == (3 if guard else 0) and result["finite"]  # 1 per epoch
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3
    # Only the order of the cross-replica gradient sum differs.
    assert result["weights"] <= 1e-5, result
    assert result["slots"] <= 1e-5, result


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is implemented on JAX")
@pytest.mark.parametrize("guard", ["", "-guard"])
def test_jax_data_parallel_over_four_cpus_matches_one_device(guard: str) -> None:
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    result = _run_worker("jax-data-parallel" + guard, {"XLA_FLAGS": flags.strip()})
    assert result["skipped"] == (3 if guard else 0) and result["finite"]  # 1 per epoch
    assert result["replicas"] == 4
    assert result["moved"] > 1e-3
    assert result["weights"] <= 1e-5, result
    assert result["slots"] <= 1e-5, result
