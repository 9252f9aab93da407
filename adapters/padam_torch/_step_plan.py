"""The optimizer's planned step: per param group, everything a fused CPU step needs, kept between
steps and revalidated cheaply.

A training loop steps the same tensors with the same hyperparameters every time, so
:class:`GroupPlan` keeps what the fused kernel needs (its address table, the tensor lists, the
kernel's hyperparameters) and, per step, only checks (in C-level passes, no Python loop over
tensors) that it still describes the group: the same parameters in the list, the same state
dicts holding the same tensors at the same addresses, a dense gradient of the right dtype and
size for every parameter, and hyperparameters unchanged by identity (tensor values by value).
Anything else makes :meth:`GroupPlan.gradients` return None, and the optimizer then takes the
general path, which creates state, raises torch's errors and builds a new plan.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim.optimizer import _foreach_supported_types

from padam_core import schedules
from padam_torch import fused as fused_path

__all__ = ["GroupPlan", "eligible"]

_grad_of = operator.attrgetter("grad")
_same = operator.is_
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
# Gradient types the plan takes as they are (NoneType is not one: a missing grad falls back).
_GRAD_TYPES = frozenset(_foreach_supported_types)


def eligible(group: Mapping[str, Any]) -> bool:
    """Whether the group's flags send it down the fused CPU path with nothing to do on the host
    first (no schedule of p to evaluate, no non-finite guard)."""
    fused, foreach = group["fused"], group["foreach"]
    return (
        (fused is True or (fused is None and foreach is None))
        and not group["differentiable"]
        and not group["capturable"]
        and not group.get("skip_nonfinite", False)
        and not schedules.is_schedule(group["partial"])
    )


def _marker(value: Any) -> Any:
    """What a hyperparameter is compared by, besides its identity: a tensor by its value (a
    scheduler may fill it in place), a list or tuple by its items."""
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else ("numel", value.numel())
    if isinstance(value, (list, tuple)):
        return tuple((id(item), _marker(item)) for item in value)
    return None


def _snapshot(group: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(
        (key, id(value), _marker(value)) for key, value in group.items() if key != "params"
    )


class GroupPlan:
    """One param group's planned fused step (see the module docstring)."""

    __slots__ = (
        "amsgrad", "group", "hyperparameters", "moments", "params", "pinned", "plan",
        "pointers", "snapshot", "state", "state_dicts", "steps",
    )  # fmt: skip

    def __init__(self, group: dict[str, Any], state: Any, params: list[Tensor]) -> None:
        self.group = group
        self.state = state
        self.params = params
        self.state_dicts = [state[param] for param in params]
        self.amsgrad = bool(group["amsgrad"])
        keys = _MOMENTS if self.amsgrad else _MOMENTS[:2]
        self.moments = {key: [d[key] for d in self.state_dicts] for key in keys}
        self.steps = [d["step"] for d in self.state_dicts]
        tensors = [params, *self.moments.values()]
        self.plan = fused_path._Plan(
            fused_path._plan_key(tensors, self.steps), tensors, self.steps,
            fused_path._cpu_internals(),
        )  # fmt: skip
        self.pointers = self._pointers()
        self.snapshot: tuple[Any, ...] = ()
        self.pinned: list[Any] = []
        self.hyperparameters: dict[str, Any] = {}
        self.accept_hyperparameters()

    @classmethod
    def build(cls, group: dict[str, Any], state: Any) -> GroupPlan | None:
        """A plan for the group as it is after a step of the general path, or None where the
        plan cannot describe it (flags, a missing gradient or state, dtypes, layouts)."""
        if not eligible(group) or torch.compiler.is_compiling():
            return None
        params = list(group["params"])
        if not params or fused_path._cpu_internals() is None:
            return None
        if any(type(p) not in _GRAD_TYPES or type(p.grad) not in _GRAD_TYPES for p in params):
            return None
        keys = ("step", *(_MOMENTS if group["amsgrad"] else _MOMENTS[:2]))
        states = [state.get(param) for param in params]
        if any(s is None or any(key not in s for key in keys) for s in states):
            return None
        tensors = [params, *([s[key] for s in states] for key in keys[1:])]
        steps = [s["step"] for s in states]
        if not all(isinstance(t, Tensor) for t in steps) or not fused_path.plannable(
            tensors, steps
        ):
            return None
        return cls(group, state, params)

    def _pointers(self) -> np.ndarray:
        written = self.plan.written
        return np.fromiter(map(Tensor.data_ptr, written), np.int64, len(written))

    def hyperparameters_current(self) -> bool:
        """Whether the group's hyperparameters are those last accepted (then still valid)."""
        return _snapshot(self.group) == self.snapshot

    def accept_hyperparameters(self) -> bool:
        """Take the group's (validated, normalized) hyperparameters; False where its flags no
        longer fit the plan (the optimizer then takes the general path, which rebuilds it)."""
        group = self.group
        if not eligible(group) or bool(group["amsgrad"]) != self.amsgrad:
            return False
        beta1, beta2 = group["betas"]
        self.hyperparameters = fused_path.hyperparameters_of(
            amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], partial=group["partial"],
            maximize=group["maximize"], decoupled_weight_decay=group["decoupled_weight_decay"],
            variant=group["variant"],
        )  # fmt: skip
        # The values compared by identity stay alive, so their ids cannot be reused.
        self.pinned = [(value, tuple(value)) if isinstance(value, (list, tuple)) else value
                       for value in group.values()]  # fmt: skip
        self.snapshot = _snapshot(group)
        return True

    def gradients(self, state: Any) -> list[Tensor] | None:
        """The group's gradients when the plan still describes its tensors, else None.

        Reads only. The gradients' dtypes, layouts and sizes are checked by
        :func:`padam_torch.fused.plan_count`.
        """
        params = self.group["params"]
        if len(params) != len(self.params) or not all(map(_same, params, self.params)):
            return None
        if state is not self.state or not all(map(_same, map(state.get, params), self.state_dicts)):
            return None
        try:
            if not all(map(_same, map(operator.itemgetter("step"), self.state_dicts), self.steps)):
                return None
            for key, tensors in self.moments.items():
                getter = operator.itemgetter(key)
                if not all(map(_same, map(getter, self.state_dicts), tensors)):
                    return None
        except KeyError:  # a state entry was removed
            return None
        grads = list(map(_grad_of, params))
        if not _GRAD_TYPES.issuperset(map(type, grads)):  # a grad is None, or a subclass
            return None
        if not np.array_equal(self._pointers(), self.pointers):  # e.g. param.data = ...
            return None
        return grads
