"""Padam under torch's own distributed engines on CPU: gloo, two processes started here.

One launch runs every scenario of ``distributed_worker.py`` (DDP, ZeroRedundancyOptimizer,
FSDP2 + torch.distributed.checkpoint); each test asserts on the measurements it wrote. A scenario
that raised shows the error and traceback in the failing test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

WORLD_SIZE = 2
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch without gloo"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory) -> dict[str, list[dict]]:
    directory = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    pythonpath = os.pathsep.join(
        [str(ROOT), str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")]
    )
    processes = []
    for rank in range(WORLD_SIZE):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": pythonpath,
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.torch.distributed_worker", str(directory)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("distributed worker timed out")
        outputs.append(output)
    results: dict[str, list[dict]] = {}
    for name in ("ddp", "zero", "fsdp2"):
        files = [directory / f"{name}-{rank}.json" for rank in range(WORLD_SIZE)]
        if not all(f.exists() for f in files):
            codes = [p.returncode for p in processes]
            pytest.fail(f"no result for {name}; exit codes {codes}; output:\n" + "\n".join(outputs))
        results[name] = [json.loads(f.read_text()) for f in files]
    return results


def _checked(results: list[dict]) -> list[dict]:
    for rank, result in enumerate(results):
        assert result["ok"], f"rank {rank}: {result['error']}\n{result['traceback']}"
    return results


def test_ddp_ranks_agree_and_match_one_process_on_the_full_batch(distributed_results):
    for result in _checked(distributed_results["ddp"]):
        assert result["ranks_agree"]
        assert result["error_vs_single_process"] <= 1e-12
        assert result["distance_from_init"] > 1e-3


def test_zero_redundancy_optimizer_matches_unsharded_padam(distributed_results):
    results = _checked(distributed_results["zero"])
    for result in results:
        assert result["ranks_agree"]
        assert result["error_vs_unsharded"] <= 1e-14
    # The 4 parameter tensors are split between the ranks; rank 0 consolidates Adam-style keys.
    assert sum(r["params_with_local_state"] for r in results) == 4
    assert all(r["params_with_local_state"] < 4 for r in results)
    assert results[0]["consolidated_state_keys"] == [
        "exp_avg",
        "exp_avg_sq",
        "max_exp_avg_sq",
        "step",
    ]


def test_fsdp2_trains_and_resumes_from_distributed_checkpoint(distributed_results):
    for result in _checked(distributed_results["fsdp2"]):
        assert result["param_type"] == "DTensor"
        assert result["ranks_agree"]
        assert result["error_vs_single_process"] <= 1e-12
        assert result["step_after_load"] == 4.0
        assert result["resume_bitwise"]
        assert result["foreach_error_vs_single_tensor"] <= 1e-12
        assert result["distance_from_init"] > 1e-3
