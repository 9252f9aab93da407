"""Legs of a run that moves between frameworks through Padam's state file.

Each leg builds its framework's optimizer from the core names (tests.oracle.Config) over a
list of float32 parameters (the same order in every framework), optionally loads a state file,
applies ``grads[t]`` (one list of arrays per step), optionally saves a state file, and returns
the parameters as NumPy arrays. The Keras leg runs in a subprocess: Keras picks its backend once
per process. ``python -m tests.conformance.handoff JOB.json`` is that subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.oracle import Config

ROOT = Path(__file__).resolve().parents[2]
Grads = list[list[np.ndarray]]


def torch_leg(params: list[np.ndarray], grads: Grads, config: Config, *,
              load: Path | None = None, save: Path | None = None) -> list[np.ndarray]:  # fmt: skip
    import torch

    from padam_torch import Padam, load_state, save_state

    tensors = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float32)) for p in params]
    optimizer = Padam(tensors, lr=config.lr, betas=(config.b1, config.b2), eps=config.eps,
                      weight_decay=config.weight_decay, partial=config.partial,
                      amsgrad=config.amsgrad, decoupled_weight_decay=config.decoupled_weight_decay,
                      maximize=config.maximize, variant=config.variant)  # fmt: skip
    if load is not None:
        load_state(load, optimizer)
    for step_grads in grads:
        for tensor, grad in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.tensor(grad, dtype=torch.float32)
        optimizer.step()
    if save is not None:
        save_state(save, optimizer)
    return [tensor.detach().numpy().copy() for tensor in tensors]


def jax_leg(params: list[np.ndarray], grads: Grads, config: Config, *,
            load: Path | None = None, save: Path | None = None) -> list[np.ndarray]:  # fmt: skip
    import jax
    import jax.numpy as jnp
    import optax

    from padam_jax import load_state, padam, save_state

    optimizer = padam(learning_rate=config.lr, b1=config.b1, b2=config.b2, eps=config.eps,
                      partial=config.partial, weight_decay=config.weight_decay,
                      decoupled_weight_decay=config.decoupled_weight_decay,
                      amsgrad=config.amsgrad, maximize=config.maximize,
                      variant=config.variant)  # fmt: skip

    @jax.jit
    def step(values, state, step_grads):
        updates, state = optimizer.update(step_grads, state, values)
        return optax.apply_updates(values, updates), state

    values = [jnp.asarray(p, dtype=jnp.float32) for p in params]
    state = optimizer.init(values)
    if load is not None:
        state = load_state(load, like=state, variant=config.variant)
    for step_grads in grads:
        values, state = step(values, state, [jnp.asarray(g, jnp.float32) for g in step_grads])
    if save is not None:
        save_state(save, state, variant=config.variant)
    return [np.array(value) for value in values]


def core_leg(params: list[np.ndarray], grads: Grads, config: Config, *,
             load: Path | None = None, save: Path | None = None) -> list[np.ndarray]:  # fmt: skip
    import padam_core

    arrays = [p.astype(np.float32) for p in params]
    optimizer = padam_core.Padam(arrays, **config.kwargs())
    if load is not None:
        optimizer.load(load)
    for step_grads in grads:
        optimizer.step([g.astype(np.float32) for g in step_grads])
    if save is not None:
        optimizer.save(save)
    return [array.copy() for array in arrays]


def _keras_leg_here(params: list[np.ndarray], grads: Grads, config: Config, *,
                    load: str | None, save: str | None) -> list[np.ndarray]:  # fmt: skip
    import keras

    from padam_keras import Padam, load_state, save_state

    decay = ({"weight_decay": config.weight_decay} if config.decoupled_weight_decay
             else {"l2_weight_decay": config.weight_decay})  # fmt: skip
    optimizer = Padam(learning_rate=config.lr, beta_1=config.b1, beta_2=config.b2,
                      epsilon=config.eps, partial=config.partial, amsgrad=config.amsgrad,
                      maximize=config.maximize, variant=config.variant, **decay)  # fmt: skip
    variables = [keras.Variable(p.astype(np.float32), dtype="float32") for p in params]
    optimizer.build(variables)
    if load is not None:
        load_state(load, optimizer)
    for step_grads in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g, "float32") for g in step_grads], variables)
    if save is not None:
        save_state(save, optimizer)
    return [keras.ops.convert_to_numpy(variable).copy() for variable in variables]


def keras_legs(jobs: list[dict], workdir: Path, *, backend: str) -> list[list[np.ndarray]]:
    """Run Keras legs in one subprocess with ``KERAS_BACKEND=backend``.

    Each job: ``params``, ``grads``, ``config`` (a Config), ``load``, ``save`` (paths or None).
    """
    described = []
    for index, job in enumerate(jobs):
        arrays = {f"param{i}": p for i, p in enumerate(job["params"])}
        for t, step_grads in enumerate(job["grads"]):
            arrays.update({f"grad{t}_{i}": g for i, g in enumerate(step_grads)})
        inputs = workdir / f"keras_job{index}_in.npz"
        np.savez(inputs, **arrays)
        described.append({
            "inputs": str(inputs), "output": str(workdir / f"keras_job{index}_out.npz"),
            "count": len(job["params"]), "steps": len(job["grads"]),
            "config": job["config"].kwargs(),
            "load": str(job["load"]) if job.get("load") else None,
            "save": str(job["save"]) if job.get("save") else None,
        })  # fmt: skip
    job_file = workdir / "keras_jobs.json"
    job_file.write_text(json.dumps(described))
    environment = {key: value for key, value in os.environ.items() if key != "JAX_ENABLE_X64"}
    environment.update(
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT), str(ROOT / "adapters"), environment.get("PYTHONPATH", "")]
        ),
    )
    completed = subprocess.run(
        [sys.executable, "-m", "tests.conformance.handoff", str(job_file)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise AssertionError(f"Keras legs failed ({backend}):\n{completed.stderr[-4000:]}")
    results = []
    for job in described:
        with np.load(job["output"]) as outputs:
            results.append([outputs[f"param{i}"] for i in range(job["count"])])
    return results


def _main(job_file: str) -> None:
    for job in json.loads(Path(job_file).read_text()):
        with np.load(job["inputs"]) as inputs:
            params = [inputs[f"param{i}"] for i in range(job["count"])]
            grads = [[inputs[f"grad{t}_{i}"] for i in range(job["count"])]
                     for t in range(job["steps"])]  # fmt: skip
        final = _keras_leg_here(params, grads, Config(**job["config"]),
                                load=job["load"], save=job["save"])  # fmt: skip
        np.savez(job["output"], **{f"param{i}": p for i, p in enumerate(final)})


if __name__ == "__main__":
    _main(sys.argv[1])
