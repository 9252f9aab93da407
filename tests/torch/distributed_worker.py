"""One rank of the distributed tests (gloo, CPU). Run by test_torch_distributed.py as
``python -m tests.torch.distributed_worker OUTPUT_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set. Each scenario writes its measurements (or the error it hit) to
``OUTPUT_DIR/<scenario>-<rank>.json``; the test process asserts on them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from padam_torch import Padam

HYPERPARAMETERS = {"lr": 0.01, "partial": 0.125, "weight_decay": 1e-3}
STEPS = 8
GLOBAL_BATCH = 16


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()


def _global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 6, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator)


def _local_batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _global_batch(step)
    size = GLOBAL_BATCH // world
    return x[rank * size : (rank + 1) * size], y[rank * size : (rank + 1) * size]


def _train(model, optimizer, steps, batch) -> None:
    for step in steps:
        x, y = batch(step)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _single_process_reference(steps=range(STEPS)) -> list[torch.Tensor]:
    """Plain Padam on the full batch in one process: what every engine must reproduce."""
    model = _model()
    _train(model, Padam(model.parameters(), **HYPERPARAMETERS), steps, _global_batch)
    return [p.detach() for p in model.parameters()]


def _max_relative_error(params, reference) -> float:
    return max(
        ((p - r).abs().max() / r.abs().max()).item() for p, r in zip(params, reference, strict=True)
    )


def _distance_from_init(params) -> float:
    """How far training moved the parameters (so an equality above is not trivial)."""
    initial = list(_model().parameters())
    pairs = zip(params, initial, strict=True)
    return max((p.detach() - q.detach()).abs().max().item() for p, q in pairs)


def _ranks_agree(params) -> bool:
    """Every rank holds bitwise the same parameters."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered)


def scenario_ddp(rank: int, world: int, directory: Path) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(_model())
    optimizer = Padam(model.parameters(), **HYPERPARAMETERS)
    _train(model, optimizer, range(STEPS), lambda s: _local_batch(s, rank, world))
    params = list(model.module.parameters())
    return {
        "ranks_agree": _ranks_agree(params),
        "error_vs_single_process": _max_relative_error(params, _single_process_reference()),
        "distance_from_init": _distance_from_init(params),
    }


def scenario_zero(rank: int, world: int, directory: Path) -> dict:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    sharded_model = DistributedDataParallel(_model())
    plain_model = DistributedDataParallel(_model())
    sharded = ZeroRedundancyOptimizer(
        sharded_model.parameters(), optimizer_class=Padam, **HYPERPARAMETERS
    )
    plain = Padam(plain_model.parameters(), **HYPERPARAMETERS)
    batch = lambda s: _local_batch(s, rank, world)  # noqa: E731
    _train(sharded_model, sharded, range(STEPS), batch)
    _train(plain_model, plain, range(STEPS), batch)
    sharded_params = list(sharded_model.module.parameters())
    plain_params = list(plain_model.module.parameters())
    # Each rank keeps the state of its own shard only.
    local_state = sum(len(state) > 0 for state in sharded.optim.state.values())
    sharded.consolidate_state_dict(to=0)
    keys = sorted(next(iter(sharded.state_dict()["state"].values()))) if rank == 0 else None
    return {
        "ranks_agree": _ranks_agree(sharded_params),
        "bitwise_equal_to_unsharded": all(
            torch.equal(a, b) for a, b in zip(sharded_params, plain_params, strict=True)
        ),
        "error_vs_unsharded": _max_relative_error(sharded_params, plain_params),
        "params_with_local_state": local_state,
        "consolidated_state_keys": keys,
    }


def scenario_fsdp2(rank: int, world: int, directory: Path) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    def sharded_model_and_optimizer(foreach: bool = False):
        model = _model()
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        return model, Padam(model.parameters(), foreach=foreach, **HYPERPARAMETERS)

    def full_parameters(model) -> list[torch.Tensor]:
        return [p.full_tensor().detach() for p in model.parameters()]

    batch = lambda s: _local_batch(s, rank, world)  # noqa: E731
    half = STEPS // 2
    model, optimizer = sharded_model_and_optimizer()
    sharded_state = type(next(iter(model.parameters()))).__name__
    _train(model, optimizer, range(half), batch)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    checkpoint = str(directory / "fsdp2-checkpoint")
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=checkpoint)
    _train(model, optimizer, range(half, STEPS), batch)
    straight = full_parameters(model)

    restored, restored_optimizer = sharded_model_and_optimizer()
    model_state, optimizer_state = get_state_dict(restored, restored_optimizer)
    loaded = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(loaded, checkpoint_id=checkpoint)
    set_state_dict(
        restored,
        restored_optimizer,
        model_state_dict=loaded["model"],
        optim_state_dict=loaded["optimizer"],
    )
    step_after_load = next(iter(restored_optimizer.state.values()))["step"].item()
    _train(restored, restored_optimizer, range(half, STEPS), batch)
    resumed = full_parameters(restored)

    foreach_model, foreach_optimizer = sharded_model_and_optimizer(foreach=True)
    _train(foreach_model, foreach_optimizer, range(STEPS), batch)
    foreach_error = _max_relative_error(full_parameters(foreach_model), straight)
    return {
        "foreach_error_vs_single_tensor": foreach_error,
        "param_type": sharded_state,
        "ranks_agree": _ranks_agree(straight),
        "error_vs_single_process": _max_relative_error(straight, _single_process_reference()),
        "resume_bitwise": all(torch.equal(a, b) for a, b in zip(straight, resumed, strict=True)),
        "distance_from_init": _distance_from_init(straight),
        "step_after_load": step_after_load,
    }


SCENARIOS = {"ddp": scenario_ddp, "zero": scenario_zero, "fsdp2": scenario_fsdp2}


def main() -> None:
    directory = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for name, scenario in SCENARIOS.items():
        try:
            result = {"ok": True, **scenario(rank, world, directory)}
        except Exception as error:  # reported to the test, which shows it
            result = {
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        (directory / f"{name}-{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
