"""Padam on 8 host CPU devices with NamedSharding, in a child process.

``--xla_force_host_platform_device_count`` is read once when JAX starts its CPU backend, so the
check runs ``jax_sharding_worker.py`` in a fresh interpreter with the flag set; this process's
JAX is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("jax_sharding_worker.py")
REPOSITORY = Path(__file__).resolve().parents[2]


def test_sharded_training_keeps_sharding_and_equals_unsharded_run() -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        [env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), str(REPOSITORY / "adapters"), env.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, str(WORKER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["device_count"] == 8
    assert report["w1_shards"] == 8
    assert report["state_shardings_match"], "mu/nu/nu_max lost the parameters' sharding"
    assert report["params_shardings_match"]
    assert report["count"] == 20
    assert report["moved"] > 1e-3  # training changed the parameters
    # Same maths on shards: only the gradient's cross-shard sums may round differently.
    assert report["relative_difference"] < 1e-12
    # Array hyperparameters (inject_hyperparams) on sharded parameters, outside jit.
    assert report["inject_eager_sharding_kept"]
    assert report["inject_eager_difference"] == 0.0
