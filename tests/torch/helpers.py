"""Helpers for the torch adapter tests: recorded gradients, the float64 kernel oracle, errors."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

import padam_core
from padam_torch import Padam

#: numerics.md's tolerances on max|x - ref| / max|ref| after 100 steps against the float64 oracle.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}

# Padam's torch argument names -> padam_core's names.
_CORE_NAMES = {
    "lr",
    "eps",
    "partial",
    "weight_decay",
    "decoupled_weight_decay",
    "amsgrad",
    "maximize",
    "variant",
}


def core_hyperparameters(torch_kwargs: dict[str, Any]) -> dict[str, Any]:
    """padam_core keyword arguments for Padam's constructor keyword arguments."""
    core = {key: value for key, value in torch_kwargs.items() if key in _CORE_NAMES}
    if "betas" in torch_kwargs:
        core["b1"], core["b2"] = torch_kwargs["betas"]
    core.setdefault("amsgrad", True)
    return core


def relative_error(actual: torch.Tensor | np.ndarray, reference: np.ndarray) -> float:
    """max|actual - reference| / max|reference| over the whole tensor (numerics.md's measure)."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().to(torch.float64 if not actual.is_complex() else torch.complex128)
        actual = actual.numpy()
    return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))


def digits_tensors(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """sklearn's bundled 8x8 digits (no download): train/test features scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order] / 16.0, labels[order]
    split = 1400
    as_x = functools.partial(torch.tensor, dtype=dtype)
    return (
        as_x(images[:split]),
        torch.tensor(labels[:split]),
        as_x(images[split:]),
        torch.tensor(labels[split:]),
    )


def small_mlp(
    dtype: torch.dtype = torch.float64, hidden: int = 16, seed: int = 0
) -> torch.nn.Module:
    """A 64 -> hidden -> 10 tanh MLP with a fixed initialisation."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10)
    ).to(dtype)


def batches(features: torch.Tensor, labels: torch.Tensor, size: int, seed: int = 0) -> Iterator:
    """Endless shuffled minibatches."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels) - size + 1, size):
            index = order[start : start + size]
            yield features[index], labels[index]


@functools.cache
def recorded_gradients(steps: int = 100) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial parameters and ``steps`` gradients of a real model (the digits MLP, float64).

    The gradients come from a training run (momentum SGD on minibatches), so they have a real
    model's scales, sparsity and drift; every optimizer under test then replays the same sequence.
    """
    features, labels, _, _ = digits_tensors()
    model = small_mlp()
    initial = [p.detach().numpy().copy() for p in model.parameters()]
    driver = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sequence = []
    for _, (x, y) in zip(range(steps), batches(features, labels, 64), strict=False):
        driver.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        sequence.append([p.grad.numpy().copy() for p in model.parameters()])
        driver.step()
    return initial, sequence


def oracle_trajectory(
    initial: list[np.ndarray], gradients: list[list[np.ndarray]], **core_kwargs: Any
) -> list[np.ndarray]:
    """The padam_core kernel in NumPy float64 over the gradient sequence: final parameters."""
    params = [np.asarray(p, dtype=np.float64) for p in initial]
    state = padam_core.init(params, amsgrad=core_kwargs.get("amsgrad", True))
    for step_gradients in gradients:
        grads = [np.asarray(g, dtype=np.float64) for g in step_gradients]
        params, state = padam_core.update(grads, state, params, **core_kwargs)
    return params


def torch_trajectory(
    initial: list[np.ndarray],
    gradients: list[list[np.ndarray]],
    dtype: torch.dtype,
    **padam_kwargs: Any,
) -> tuple[list[torch.Tensor], Padam]:
    """Padam over the gradient sequence on ``dtype`` parameters: final parameters, optimizer."""
    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in initial]
    optimizer = Padam(params, **padam_kwargs)
    for step_gradients in gradients:
        for param, grad in zip(params, step_gradients, strict=True):
            param.grad = torch.tensor(grad, dtype=dtype)
        optimizer.step()
    return params, optimizer


def cast_sequence(
    initial: list[np.ndarray], gradients: list[list[np.ndarray]], dtype: torch.dtype
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """The inputs rounded to ``dtype`` and back to float64, so only the optimizer's error shows."""

    def rounded(array: np.ndarray) -> np.ndarray:
        return torch.tensor(array).to(dtype).to(torch.float64).numpy()

    return [rounded(p) for p in initial], [[rounded(g) for g in step] for step in gradients]


def snapshot(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A deep copy of an optimizer's state dict, to check that nothing changed."""
    return copy.deepcopy(optimizer.state_dict())


def assert_state_dicts_equal(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Bitwise equality of two optimizer state dicts (tensors, dtypes and hyperparameters)."""
    assert first["param_groups"] == second["param_groups"]
    assert first["state"].keys() == second["state"].keys()
    for key, state in first["state"].items():
        other = second["state"][key]
        assert state.keys() == other.keys()
        for name, value in state.items():
            assert value.dtype == other[name].dtype, name
            assert torch.equal(value, other[name]), name
