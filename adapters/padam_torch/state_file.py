"""Save and load a :class:`padam_torch.Padam`'s state in the shared state file (safetensors).

The file (``docs/state-format.md``) is the one padam_jax, padam_keras and padam_core read, so a
run can move between frameworks. Parameters are matched by order: the parameters of every param
group in turn, as ``optimizer.param_groups`` lists them.

>>> import torch
>>> from padam_torch import Padam, load_state, save_state
>>> model = torch.nn.Linear(3, 1)
>>> optimizer = Padam(model.parameters(), lr=0.1)
>>> model(torch.ones(2, 3)).sum().backward()
>>> optimizer.step()
>>> save_state("/tmp/padam_torch_state.safetensors", optimizer)
>>> load_state("/tmp/padam_torch_state.safetensors", Padam(model.parameters(), lr=0.1))
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from padam_core.hyperparameters import DEFAULT_VARIANT
from padam_core.schedules import Schedule
from padam_core.state_file import MOMENTS, TensorSpec, read_state_file, write_state_file
from padam_torch.optimizer import Padam, _state_dtype

__all__ = ["load_state", "save_state"]


def _parameters(optimizer: Padam) -> list[tuple[str, Tensor, dict[str, Any]]]:
    """(name, parameter, group) in file order; names from ``named_parameters`` when given."""
    if not isinstance(optimizer, Padam):
        raise TypeError(f"expected a padam_torch.Padam, got {type(optimizer).__name__}")
    entries = []
    for group_index, group in enumerate(optimizer.param_groups):
        names = group.get("param_names")
        for index, param in enumerate(group["params"]):
            name = names[index] if names else f"param_groups[{group_index}].params[{index}]"
            if torch.is_complex(param):
                raise ValueError(
                    f"parameter {name} is complex: the state file holds real tensors only "
                    "(padam_torch keeps complex moments, the other frameworks real v)"
                )
            entries.append((name, param, group))
    return entries


def _flags(entries: list[tuple[str, Tensor, dict[str, Any]]]) -> tuple[str, bool]:
    """The one (variant, amsgrad) of every param group: the file holds one of each."""
    flags = {(group["variant"], bool(group["amsgrad"])) for _, _, group in entries}
    if len(flags) > 1:
        raise ValueError(
            f"the param groups differ in (variant, amsgrad): {sorted(flags)}; a state file "
            "holds one of each"
        )
    return flags.pop() if flags else (DEFAULT_VARIANT, True)


def _to_numpy(tensor: Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return tensor.numpy().copy()


def _from_numpy(array: np.ndarray, param: Tensor) -> Tensor:
    """A state tensor with ``array``'s values, ``param``'s device and memory format."""
    if array.dtype.name == "bfloat16":
        source = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        source = torch.from_numpy(array)
    state = torch.empty_like(param, dtype=_state_dtype(param), memory_format=torch.preserve_format)
    return state.copy_(source)


def save_state(path: str | os.PathLike[str], optimizer: Padam) -> None:
    """Write ``optimizer``'s state to ``path`` (atomically; see ``docs/state-format.md``).

    Every param group must have the same ``variant`` and ``amsgrad``. Parameters that have
    state must share one step count; a parameter not stepped yet is written as zero moments
    (what JAX and Keras hold for a parameter whose gradients were all zero).
    """
    entries = _parameters(optimizer)
    variant, amsgrad = _flags(entries)
    steps = {
        name: float(state["step"])
        for name, param, _ in entries
        if (state := optimizer.state.get(param)) and "step" in state
    }
    if len(set(steps.values())) > 1:
        raise ValueError(f"the parameters were stepped different numbers of times: {steps}")
    step = next(iter(steps.values()), 0.0)
    if not step.is_integer():
        raise ValueError(f"the step count {step} is not an integer")
    moments: dict[str, list[np.ndarray] | None] = {moment: [] for moment in MOMENTS}
    if not amsgrad:
        moments["max_exp_avg_sq"] = None
    for _, param, _ in entries:
        state = optimizer.state.get(param, {})
        for moment, arrays in moments.items():
            if arrays is None:
                continue
            if moment in state:
                arrays.append(_to_numpy(state[moment]))
            else:
                dtype = state["exp_avg_sq"].dtype if "exp_avg_sq" in state else _state_dtype(param)
                arrays.append(_to_numpy(torch.zeros(param.shape, dtype=dtype)))
    group = optimizer.param_groups[0]
    recorded = {key: group[key] for key in ("lr", "eps", "weight_decay", "partial",
                                            "decoupled_weight_decay", "maximize")}  # fmt: skip
    recorded["betas"] = group["betas"]
    recorded = {
        key: float(value) if isinstance(value, Tensor) else value for key, value in recorded.items()
    }
    if isinstance(recorded["partial"], Schedule):  # a schedule records its config
        recorded["partial"] = recorded["partial"].get_config()
    exp_avg, exp_avg_sq = moments["exp_avg"], moments["exp_avg_sq"]
    assert exp_avg is not None and exp_avg_sq is not None  # only max_exp_avg_sq may be None
    write_state_file(path, step=int(step), exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                     max_exp_avg_sq=moments["max_exp_avg_sq"],
                     names=[name for name, _, _ in entries],
                     variant=variant, amsgrad=amsgrad, hyperparameters=recorded,
                     writer=f"padam_torch (torch {torch.__version__})")  # fmt: skip


def load_state(path: str | os.PathLike[str], optimizer: Padam) -> None:
    """Replace ``optimizer``'s state by the one in ``path``, for every parameter or none.

    The file is checked in full first (count, shapes, dtypes, values, variant, amsgrad); a
    ``ValueError`` leaves the optimizer unchanged. Parameters that have no state yet get it.
    Hyperparameters (lr, betas, ...) stay the optimizer's own.
    """
    entries = _parameters(optimizer)
    variant, amsgrad = _flags(entries)
    specs = [TensorSpec(name, tuple(param.shape), str(_state_dtype(param)).removeprefix("torch."))
             for name, param, _ in entries]  # fmt: skip
    loaded = read_state_file(path, expected=specs, variant=variant, amsgrad=amsgrad)
    new_states = []
    for index, (_, param, group) in enumerate(entries):
        state: dict[str, Any] = {
            moment: _from_numpy(getattr(loaded, moment)[index], param)
            for moment in MOMENTS
            if getattr(loaded, moment) is not None
        }
        # float32 step, on the parameter's device only when capturable (as torch.optim.Adam).
        device = param.device if group["capturable"] else None
        state["step"] = torch.tensor(float(loaded.step), dtype=_get_scalar_dtype(), device=device)
        new_states.append((param, state))
    for param, state in new_states:  # nothing above changed the optimizer
        optimizer.state[param] = state
