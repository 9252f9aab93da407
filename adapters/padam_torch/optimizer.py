r"""Padam as a ``torch.optim.Optimizer``, laid out like ``torch/optim/adam.py``.

The :class:`Padam` class manages parameter groups and state only; the maths lives in the
functional :func:`padam_torch.functional.padam`, which dispatches to a single-tensor path (the
canonical kernel on each tensor) or a multi-tensor ``torch._foreach_*`` path, one signature.

Both compute, for every tensor at step t (see :mod:`padam_core.kernel` for the variants)::

    g     <- -g                               if maximize
    g     <- g + lambda * theta               coupled L2 (default)
    theta <- theta * (1 - lr * lambda)        decoupled_weight_decay=True (AdamW)
    m     <- b1 * m + (1 - b1) * g
    v     <- b2 * v + (1 - b2) * g^2
    bc1 = 1 - b1^t,  bc2 = 1 - b2^t           as -expm1(t * log(b))
    reference: v_hat <- max(v_hat, v);        theta -= lr sqrt(bc2)/bc1 m / (sqrt(v_hat) + eps)^(2p)
    torch:     v_hat <- max(v_hat, v);        theta -= lr/bc1 m / ((v_hat/bc2)^p + eps)
    optax:     v_hat <- max(v_hat, v/bc2);    theta -= lr (m/bc1) / (v_hat^p + eps)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any, overload

import torch
from torch import Tensor
from torch.optim.optimizer import (
    Optimizer,
    ParamsT,
    _get_scalar_dtype,
    _to_scalar,
    _use_grad_for_differentiable,
)

from padam_core import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_VARIANT,
    DEFAULT_WEIGHT_DECAY,
    schedules,
    validate_hyperparameters,
)

# partial -> extra square roots after the first (x^(2p) = sqrt^(1+k)(x)): the kernel's own table,
# so both implementations take the chain for exactly the same p.
from padam_torch import fused as fused_path
from padam_torch._step_plan import GroupPlan, eligible
from padam_torch.functional import padam

__all__ = ["Padam", "padam"]

# torch's argument names for padam_core's hyperparameter names (used in error messages).
_ARGUMENT_NAMES = {"b1": "betas[0]", "b2": "betas[1]"}
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_STATE_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _state_dtype(param: Tensor) -> torch.dtype:
    """float32 state for float16/bfloat16 parameters (padam_core's policy), else the param's."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def _plain_number(value: Any, name: str) -> Any:
    """A 1-element tensor hyperparameter read as a number for range checks (never when tracing)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element, got shape {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex():
            raise ValueError(
                f"Invalid {name} value: a {value.dtype} tensor (expected a real number)"
            )
        if torch.compiler.is_compiling():
            return value  # traced: padam_core checks its dtype, not its range
        return value.detach().item()
    return value


_NUMBER_KEYS = ("lr", "eps", "weight_decay", "partial")


def _as_python_number(value: Any) -> Any:
    """A NumPy number or 0-d array (concrete, already validated) as a Python float: the foreach
    ops take Python scalars or tensors only. Tensors and Python numbers pass unchanged."""
    if isinstance(value, (Tensor, int, float)) or not hasattr(value, "dtype"):
        return value
    return float(value)


def _normalize_group(group: dict[str, Any]) -> None:
    """Replace NumPy numbers in a validated group by Python floats (in place)."""
    for key in _NUMBER_KEYS:
        if key in group:
            group[key] = _as_python_number(group[key])
    if "betas" in group:
        betas = tuple(_as_python_number(beta) for beta in group["betas"])
        if any(new is not old for new, old in zip(betas, group["betas"], strict=True)):
            group["betas"] = betas


def _check_fused_flags(group: Mapping[str, Any]) -> None:
    """torch's errors for ``fused`` with what it cannot do (checked before anything changes)."""
    fused = group.get("fused")
    if fused is not None and not isinstance(fused, bool):
        raise TypeError(f"fused must be None, True or False, got {fused!r}")
    if not fused:
        return
    if group.get("differentiable"):
        raise RuntimeError("`fused` does not support `differentiable`")
    if group.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if fused_path.cpu_kernel() is None and fused_path.cuda_kernel() is None:
        raise RuntimeError(
            "fused=True needs padam_core's compiled kernel: install numba "
            "(pip install padam[fast]), or pass fused=None to use the fastest path available"
        )


@torch._disable_dynamo  # eager: under torch.compile a graph break (the skip is a branch)
def _all_finite(grads: list[Tensor]) -> bool:
    """Whether every gradient is finite: one read of each (the guard's check, on the host).

    CPU tensors with numba installed: padam_core.fused_cpu.all_finite on zero-copy NumPy views
    (bfloat16 as uint16 bits, which it reads as bfloat16); otherwise one ``isfinite().all()``
    per tensor, reduced on each device and read once per device (a sync, also under
    ``torch.compile``: the skip is a data-dependent branch there, a graph break).
    """
    real = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
    host = [g for g in real if g.device.type == "cpu"]
    if host and fused_path.cpu_kernel() is not None:
        from padam_core import fused_cpu

        if not fused_cpu.all_finite([fused_path.host_array(g) for g in host]):
            return False
        real = [g for g in real if g.device.type != "cpu"]
    by_device: dict[torch.device, list[Tensor]] = {}
    for grad in real:
        by_device.setdefault(grad.device, []).append(grad)
    return all(
        bool(torch.stack([torch.isfinite(g).all() for g in tensors]).all())
        for tensors in by_device.values()
    )


@torch._disable_dynamo  # eager on the host: under torch.compile a graph break, p a constant
def _partials_of_step(optimizer: Optimizer) -> list[dict[float, Any] | None]:
    """Per group, p for each distinct 1-based step count t its params take now (None for a
    number). Evaluated on the host before anything changes, so a schedule's bad value (a
    ``ValueError`` naming the step) leaves everything as it was; params of a group normally
    share one count, params that skipped steps (no grad) get their own t."""
    result: list[dict[float, Any] | None] = []
    for index, group in enumerate(optimizer.param_groups):
        partial = group["partial"]
        if not schedules.is_schedule(partial):
            result.append(None)
            continue
        counts = set()
        for param in group["params"]:
            if param.grad is None:
                continue
            step = optimizer.state.get(param, {}).get("step", 0.0)
            counts.add(float(step) + 1.0)
        values = {}
        for count in sorted(counts):
            try:
                value = schedules.evaluate_partial(partial, int(count))
            except ValueError as error:
                raise ValueError(f"param group {index}: {error}") from None
            if isinstance(value, Tensor):  # a callable may return a 0-d tensor
                value = value.item()
            values[count] = _as_python_number(value)
        result.append(values)
    return result


def _validate_group(group: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first invalid hyperparameter of a param group."""
    betas = group.get("betas", (DEFAULT_B1, DEFAULT_B2))
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas!r} (expected a pair (beta1, beta2))")
    partial = group.get("partial", DEFAULT_PARTIAL)
    if isinstance(partial, Tensor):
        raise ValueError(
            f"Invalid partial value: {partial!r} (expected a Python number, a "
            "padam_core.schedules schedule or a callable of the step count)"
        )
    skip = group.get("skip_nonfinite", False)
    if not isinstance(skip, bool):
        raise ValueError(f"Invalid skip_nonfinite value: {skip!r} (expected True or False)")
    scheduled = schedules.is_schedule(partial)
    if scheduled and group.get("capturable"):
        raise ValueError(
            "partial as a schedule is not supported with capturable=True: it is evaluated on "
            "the host from the step count, which capturable keeps on the device"
        )
    schedules.validate_partial(partial)
    values = {
        "lr": _plain_number(group.get("lr", DEFAULT_LR), "lr"),
        "b1": _plain_number(betas[0], "betas[0]"),
        "b2": _plain_number(betas[1], "betas[1]"),
        "eps": group.get("eps", DEFAULT_EPS),
        "weight_decay": group.get("weight_decay", DEFAULT_WEIGHT_DECAY),
    }
    if not scheduled:
        values["partial"] = partial
    for flag in ("amsgrad", "decoupled_weight_decay", "maximize", "variant"):
        if flag in group:
            values[flag] = group[flag]
    validate_hyperparameters(
        names=_ARGUMENT_NAMES, traced=True if torch.compiler.is_compiling() else None, **values
    )
    if group.get("foreach") and any(isinstance(beta, Tensor) for beta in betas):
        raise ValueError(
            "Invalid betas value: betas as Tensors are only supported with foreach=False"
        )


class Padam(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = DEFAULT_LR,
        betas: tuple[float | Tensor, float | Tensor] = (DEFAULT_B1, DEFAULT_B2),
        eps: float = DEFAULT_EPS,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
        amsgrad: bool = True,
        partial: schedules.PartialLike = DEFAULT_PARTIAL,
        *,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        variant: str = DEFAULT_VARIANT,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "partial": partial,
            "amsgrad": amsgrad,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "variant": variant,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "skip_nonfinite": skip_nonfinite,
        }
        _validate_group(defaults)
        _normalize_group(defaults)
        _check_fused_flags(defaults)
        defaults["betas"] = tuple(map(_to_scalar, defaults["betas"]))
        super().__init__(params, defaults)
        #: steps skipped by the non-finite guard (``skip_nonfinite=True``); in ``state_dict``.
        self.skipped_steps = 0
        if fused is not False and not foreach and not differentiable:
            cpu = (p.device.type == "cpu" for group in self.param_groups for p in group["params"])
            if any(cpu):
                fused_path.cpu_kernel()  # numba's import (~0.4 s) here, not in the first step

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its hyperparameters are validated before anything changes."""
        _validate_group({**self.defaults, **param_group})
        _normalize_group(param_group)
        _check_fused_flags({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "skipped_steps": self.skipped_steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group.setdefault("fused", None)  # pickled before the option existed
            group.setdefault("skip_nonfinite", False)
            for param in group["params"]:
                param_state = self.state.get(param, {})
                if param_state and not torch.is_tensor(param_state.get("step", 0.0)):
                    step_value = float(param_state["step"])
                    param_state["step"] = (
                        torch.tensor(step_value, dtype=_get_scalar_dtype(), device=param.device)
                        if group["capturable"]
                        else torch.tensor(step_value, dtype=_get_scalar_dtype())
                    )
        self.__dict__.setdefault("skipped_steps", 0)

    def _init_group(
        self,
        group: dict[str, Any],
        params_with_grad: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
    ) -> bool:
        """Collect the tensors of ``group`` that have a gradient; create their state lazily."""
        has_complex = False
        for param in group["params"]:
            if param.grad is None:
                continue
            has_complex |= torch.is_complex(param)
            params_with_grad.append(param)
            grads.append(param.grad)

            state = self.state[param]
            if len(state) == 0:
                # As torch.optim.Adam: step on the CPU unless capturable (no sync per step).
                state["step"] = (
                    torch.zeros((), dtype=_get_scalar_dtype(), device=param.device)
                    if group["capturable"]
                    else torch.tensor(0.0, dtype=_get_scalar_dtype())
                )
                # float16/bfloat16 parameters keep float32 moments (padam_core's policy).
                dtype = _state_dtype(param)
                state["exp_avg"] = torch.zeros_like(
                    param, dtype=dtype, memory_format=torch.preserve_format
                )
                state["exp_avg_sq"] = torch.zeros_like(
                    param, dtype=dtype, memory_format=torch.preserve_format
                )
            if group["amsgrad"] and "max_exp_avg_sq" not in state:
                # Also reached when amsgrad is switched on mid-run: the running max starts now.
                state["max_exp_avg_sq"] = torch.zeros_like(
                    state["exp_avg_sq"], memory_format=torch.preserve_format
                )
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            if group["differentiable"] and state["step"].requires_grad:
                raise RuntimeError(
                    "`requires_grad` is not supported for `step` in differentiable mode"
                )
            state_steps.append(state["step"])
        return has_complex

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure: a closure that reevaluates the model and returns the loss (optional).

        Returns:
            the loss returned by ``closure``, or ``None``.
        """
        self._accelerator_graph_capture_health_check()

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Every group planned and its plan current (the usual step after the first): one
        # compiled call per group, no per-tensor Python work. Otherwise the general path below,
        # which then plans the groups again.
        if self._planned_step():
            return loss

        # Rejected before any group is stepped or any state is created.
        if any(
            param.grad is not None and param.grad.is_sparse
            for group in self.param_groups
            for param in group["params"]
        ):
            raise RuntimeError(
                "Padam does not support sparse gradients; use dense gradients "
                "(e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam"
            )
        for group in self.param_groups:
            if group["fused"]:  # before any state is created, as every other check
                fused_path.check_devices([p for p in group["params"] if p.grad is not None])

        # Every group is validated before any state is created or any step count moves (a group
        # may have been edited, e.g. group["lr"] = "0.1", or loaded): all or nothing. Not while
        # torch.compile traces (the values were validated when set; reading them would break
        # the graph).
        for index, group in enumerate([] if torch.compiler.is_compiling() else self.param_groups):
            try:
                _validate_group(group)
            except ValueError as error:
                raise ValueError(f"param group {index}: {error}") from None
            _normalize_group(group)
        # Host evaluation of schedules (eager: a graph break under torch.compile), only where
        # some group has one, so a number partial keeps the compiled step whole.
        if any(schedules.is_schedule(group["partial"]) for group in self.param_groups):
            partials = _partials_of_step(self)
        else:
            partials = [None] * len(self.param_groups)

        # The non-finite guard: one read of every gradient of every group, before any state is
        # created or anything is written; a NaN/inf anywhere skips the whole step.
        if any(group.get("skip_nonfinite") for group in self.param_groups):
            every_grad = [
                param.grad
                for group in self.param_groups
                for param in group["params"]
                if param.grad is not None
            ]
            if not _all_finite(every_grad):
                self.skipped_steps += 1
                return loss

        for group, group_partials in zip(self.param_groups, partials, strict=True):
            params_with_grad: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            max_exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []

            has_complex = self._init_group(
                group,
                params_with_grad,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                state_steps,
            )

            # (p, the indices of the params stepped with it; None: all of them)
            buckets: list[tuple[Any, list[int] | None]]
            if group_partials is None:
                buckets = [(group["partial"], None)]
            elif len(group_partials) == 1:  # the usual case: one count, one call for the group
                buckets = [(next(iter(group_partials.values())), None)]
            else:  # params that skipped steps: one call per distinct count
                counts = [float(step) + 1.0 for step in state_steps]
                buckets = [
                    (p, [i for i, count in enumerate(counts) if count == t])
                    for t, p in group_partials.items()
                ]
            for partial, indices in buckets:
                lists = (params_with_grad, grads, exp_avgs, exp_avg_sqs, state_steps)
                if indices is not None:
                    picked = [[items[i] for i in indices] for items in lists]
                    lists = (picked[0], picked[1], picked[2], picked[3], picked[4])
                    maxima = [max_exp_avg_sqs[i] for i in indices] if group["amsgrad"] else []
                    complex_bucket = any(torch.is_complex(p) for p in lists[0])
                else:
                    maxima, complex_bucket = max_exp_avg_sqs, has_complex
                self._step_tensors(group, *lists, maxima, complex_bucket, partial, indices)

        self._plan_groups()
        return loss

    def _planned_step(self) -> bool:
        """One step through every group's :class:`~padam_torch._step_plan.GroupPlan`; False,
        with nothing changed, where a group has no plan or its plan no longer describes it.

        All groups are checked before any is stepped. A group whose hyperparameters changed
        (an lr scheduler, a value edited by hand) is validated here as the general path
        validates it, with the same error.
        """
        plans = self.__dict__.get("_step_plans")
        if not plans or torch.compiler.is_compiling():
            return False
        work = []
        changed = []
        for index, group in enumerate(self.param_groups):
            plan = plans.get(id(group))
            if plan is None or plan.group is not group:
                return False
            grads = plan.gradients(self.state)
            count = None if grads is None else fused_path.plan_count(plan.plan, grads)
            if count is None:
                return False
            if not plan.hyperparameters_current():
                changed.append((index, plan))
            work.append((plan, grads, count))
        for index, plan in changed:
            try:
                _validate_group(plan.group)
            except ValueError as error:
                raise ValueError(f"param group {index}: {error}") from None
            _normalize_group(plan.group)
        if not all(plan.accept_hyperparameters() for _, plan in changed):
            return False
        for plan, grads, count in work:
            fused_path.run_plan(plan.plan, grads, count, plan.hyperparameters)
        return True

    def _plan_groups(self) -> None:
        """Plan every group for the next steps, after a step of the general path (all groups
        or none: :meth:`_planned_step` steps all of them or none)."""
        self.__dict__.pop("_step_plans", None)
        if torch.compiler.is_compiling():
            return
        if not all(map(eligible, self.param_groups)):
            return
        plans = {}
        for group in self.param_groups:
            plan = GroupPlan.build(group, self.state)
            if plan is None:
                return
            plans[id(group)] = plan
        self._step_plans = plans

    def _step_tensors(
        self,
        group: dict[str, Any],
        params_with_grad: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        has_complex: bool,
        partial: Any,
        indices: list[int] | None,
    ) -> None:
        """One call of the functional padam on (part of) a group, with p a number."""
        beta1, beta2 = group["betas"]
        padam(
            params_with_grad,
            grads,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            state_steps,
            foreach=group["foreach"],
            capturable=group["capturable"],
            differentiable=group["differentiable"],
            fused=group["fused"],
            has_complex=has_complex,
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            partial=partial,
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            variant=group["variant"],
            # the view cache is per group: a bucket of part of it views afresh
            _fused_views=self._fused_views(group) if indices is None else None,
        )

    def _fused_views(self, group: dict[str, Any]) -> dict[int, Any]:
        """The fused path's cache of NumPy views for one group (not saved, not pickled)."""
        caches = self.__dict__.get("_fused_view_caches", {})
        key = id(group)
        if key not in caches:  # a new group, or groups replaced by load_state_dict
            current = {id(other) for other in self.param_groups}
            caches = {k: cache for k, cache in caches.items() if k in current}
            caches[key] = {}
            self._fused_view_caches = caches
        return caches[key]

    # ----------------------------------------------------------------------------- checkpoints

    def _check_state_dict(self, state_dict: Any) -> None:
        """Raise ``ValueError`` if ``state_dict`` does not fit this optimizer (mutates nothing)."""
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"Padam state dict must be a mapping, got {type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"Padam state dict is missing the key {key!r}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, "
                f"the optimizer has {len(self.param_groups)}"
            )
        param_of_id: dict[Any, tuple[Tensor, dict[str, Any], int, int]] = {}
        for group_index, (group, saved) in enumerate(
            zip(self.param_groups, saved_groups, strict=True)
        ):
            if "params" not in saved:
                raise ValueError(f"loaded param group {group_index} has no 'params' entry")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded param group {group_index} has {len(saved['params'])} parameters, "
                    f"the optimizer's has {len(group['params'])}"
                )
            merged = {**group, **saved}
            try:
                _validate_group(merged)
            except ValueError as error:
                raise ValueError(f"loaded param group {group_index}: {error}") from None
            for param_index, (param_id, param) in enumerate(
                zip(saved["params"], group["params"], strict=True)
            ):
                param_of_id[param_id] = (param, merged, group_index, param_index)

        for param_id, param_state in state_dict["state"].items():
            if param_id not in param_of_id:
                continue  # torch keeps state of unknown ids as it is
            param, group, group_index, param_index = param_of_id[param_id]
            where = f"state of parameter {param_index} in group {group_index}"
            if not isinstance(param_state, Mapping):
                raise ValueError(f"{where} must be a dict, got {type(param_state).__name__}")
            required = ["step", "exp_avg", "exp_avg_sq"]
            if group["amsgrad"]:
                required.append("max_exp_avg_sq")
            missing = [key for key in required if key not in param_state]
            if missing:
                raise ValueError(f"{where} is missing {missing} (found {sorted(param_state)})")
            step = param_state["step"]
            if isinstance(step, Tensor):
                if step.numel() != 1:
                    raise ValueError(f"{where}: 'step' must hold one number, got {step.shape}")
                if not step.is_floating_point():
                    raise ValueError(
                        f"{where}: 'step' is a {step.dtype} tensor (expected a floating tensor, "
                        "as torch.optim.Adam saves it)"
                    )
                step = step.item()
            if (
                isinstance(step, bool)
                or not isinstance(step, (int, float))
                or not (math.isfinite(step) and step >= 0 and float(step).is_integer())
            ):
                raise ValueError(f"{where}: 'step' must be a whole number >= 0, got {step!r}")
            for key in _STATE_TENSORS:
                if key not in param_state:
                    continue
                value = param_state[key]
                if not isinstance(value, Tensor):
                    raise ValueError(f"{where}: {key!r} must be a tensor, got {type(value)}")
                if value.shape != param.shape:
                    raise ValueError(
                        f"{where}: {key!r} has shape {tuple(value.shape)}, "
                        f"the parameter has shape {tuple(param.shape)}"
                    )
                if not (value.is_floating_point() or value.is_complex()):
                    raise ValueError(f"{where}: {key!r} has dtype {value.dtype}, not floating")
                real = torch.view_as_real(value) if value.is_complex() else value
                if not bool(torch.isfinite(real).all()):
                    raise ValueError(f"{where}: {key!r} holds NaN or Inf")
                if key != "exp_avg" and bool((real < 0).any()):
                    raise ValueError(f"{where}: {key!r} holds negative values (it is a square)")

    @torch._disable_dynamo
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, with a schedule ``partial`` stored as its config (a plain
        callable: ``ValueError``) and the guard's ``skipped_steps`` as a top-level key."""
        saved_partials = [
            schedules.saved_partial(group["partial"], f"Padam.state_dict: param group {index}")
            for index, group in enumerate(self.param_groups)
        ]
        state_dict = super().state_dict()
        for group, partial in zip(state_dict["param_groups"], saved_partials, strict=True):
            group["partial"] = partial
        state_dict["skipped_steps"] = self.skipped_steps
        return state_dict

    @staticmethod
    def _rebuilt(state_dict: Any) -> Any:
        """``state_dict`` with schedule configs rebuilt as schedules (a shallow copy; the
        caller's dict is not changed); ``ValueError`` for a bad config or ``skipped_steps``."""
        if not isinstance(state_dict, Mapping) or "param_groups" not in state_dict:
            return state_dict
        skipped = state_dict.get("skipped_steps", 0)
        if isinstance(skipped, bool) or not isinstance(skipped, int) or skipped < 0:
            raise ValueError(
                f"Padam state dict: 'skipped_steps' must be an int >= 0, got {skipped!r}"
            )
        groups = []
        for index, group in enumerate(state_dict["param_groups"]):
            if isinstance(group, Mapping) and isinstance(group.get("partial"), Mapping):
                try:
                    partial = schedules.from_config(group["partial"])
                except ValueError as error:
                    raise ValueError(f"loaded param group {index}: {error}") from None
                group = {**group, "partial": partial}
            groups.append(group)
        return {**state_dict, "param_groups": groups}

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from :meth:`state_dict` or from ``torch.optim.Adam``/``AdamW``.

        The checkpoint is checked first (param group sizes, hyperparameter ranges, state keys,
        tensor shapes); a ``ValueError`` leaves the optimizer unchanged. As in torch, loaded
        groups replace the current hyperparameters; keys a checkpoint lacks (``partial`` and
        ``variant`` in an Adam checkpoint) keep their current values. The float32 moments of a
        float16/bfloat16 parameter stay float32 (torch would cast them to the parameter dtype).
        """
        state_dict = self._rebuilt(state_dict)
        self._check_state_dict(state_dict)
        skipped = state_dict.get("skipped_steps", 0)  # absent from torch.optim.Adam checkpoints
        state_dict = {key: value for key, value in state_dict.items() if key != "skipped_steps"}
        saved_groups = state_dict["param_groups"]
        kept = [
            {key: value for key, value in group.items() if key not in saved}
            for group, saved in zip(self.param_groups, saved_groups, strict=True)
        ]
        # Full-precision copies of the moments of low-precision params, before torch casts them.
        saved_ids = chain.from_iterable(group["params"] for group in saved_groups)
        params = chain.from_iterable(group["params"] for group in self.param_groups)
        full_precision: dict[Tensor, dict[str, Tensor]] = {}
        for param_id, param in zip(saved_ids, params, strict=True):
            if param.dtype in _LOW_PRECISION and param_id in state_dict["state"]:
                full_precision[param] = {
                    key: value
                    for key, value in state_dict["state"][param_id].items()
                    if key in _STATE_TENSORS and isinstance(value, Tensor)
                }

        amsgrad_before = [group["amsgrad"] for group in self.param_groups]
        self.__dict__.pop("_step_plans", None)  # they hold the old state tensors
        super().load_state_dict(state_dict)
        self.skipped_steps = skipped

        for group, kept_values in zip(self.param_groups, kept, strict=True):
            group.update(kept_values)
        groups = zip(self.param_groups, amsgrad_before, strict=True)
        for index, (group, before) in enumerate(groups):
            if bool(group["amsgrad"]) != bool(before):
                warnings.warn(
                    f"Padam.load_state_dict: param group {index}: the checkpoint sets "
                    f"amsgrad={group['amsgrad']} (it was {before}); a torch.optim.Adam checkpoint "
                    "has amsgrad=False unless Adam was built with amsgrad=True, which turns "
                    "Padam's running max off. The checkpoint's lr replaces yours too. Set "
                    "group['amsgrad'] after loading to keep your setting.",
                    UserWarning,
                    stacklevel=2,
                )
        for param, moments in full_precision.items():
            for key, value in moments.items():
                self.state[param][key] = value.to(
                    device=param.device, dtype=torch.float32, copy=True
                )


Padam.__doc__ = r"""Implements Padam (partially adaptive momentum estimation).

Padam is AMSGrad with the denominator raised to a partial power ``partial`` = p in [0, 1/2]:
p = 1/2 is AMSGrad, p = 0 momentum SGD. With ``variant="reference"`` (the authors' code) each
step on a parameter theta with gradient g is

.. math::
   \begin{aligned}
     g_t &\leftarrow -g_t \ \text{if maximize}, \qquad
       g_t \leftarrow g_t + \lambda\theta_{t-1} \ \text{(L2; or AdamW-style decay)} \\
     m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
     \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \qquad
       \hat v_t = v_t \ \text{otherwise} \\
     \theta_t &= \theta_{t-1} - \gamma \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
       \frac{m_t}{(\sqrt{\hat v_t} + \epsilon)^{2p}}
   \end{aligned}

``variant="torch"`` (the default: the step above without its warm-up factor
:math:`(1-\beta_2^t)^{1/2-p}`) places eps and the bias corrections as ``torch.optim.Adam`` does
(:math:`\theta_t = \theta_{t-1} - \frac{\gamma}{1-\beta_1^t} m_t / ((\hat v_t/(1-\beta_2^t))^p
+ \epsilon)`), so with ``partial=0.5`` it equals ``Adam(amsgrad=True)``, ``Adam`` with
``amsgrad=False`` and ``AdamW`` with ``decoupled_weight_decay=True``. ``variant="optax"`` is
``optax.amsgrad``'s placement (:math:`\hat v_t = \max(\hat v_{t-1}, v_t/(1-\beta_2^t))`,
:math:`\theta_t = \theta_{t-1} - \gamma \frac{m_t}{1-\beta_1^t} / (\hat v_t^p + \epsilon)`).

Args:
    params (iterable): iterable of parameters or named_parameters to optimize, or of dicts
        defining parameter groups (each group may override any hyperparameter below).
    lr (float, Tensor, optional): learning rate gamma (default: 0.1, the paper's for p = 1/8:
        100x Adam's 0.001; a factory that builds the optimizer itself without passing ``lr``,
        e.g. Hugging Face's ``optimizer_cls_and_kwargs`` or timm with ``lr=None``, gets 0.1).
        A 1-element tensor lets ``torch.compile`` reuse one graph while a scheduler changes it.
    betas (tuple[float, float], optional): b1, b2 of the moment averages (default: (0.9, 0.999)).
    eps (float, optional): epsilon of the denominator (default: 1e-8).
    weight_decay (float, optional): lambda; L2 penalty added to the gradient, or AdamW-style
        decay with ``decoupled_weight_decay=True`` (default: 0).
    amsgrad (bool, optional): keep the running max of v (Padam's default: True).
    partial (float, optional): the partial power p, 0 <= p <= 1/2 (default: 0.125, the paper's).
        p in {1/2, 1/4, 1/8, 1/16} is computed with a chain of square roots.
    decoupled_weight_decay (bool, optional): decay the parameter as AdamW does (default: False).
    maximize (bool, optional): maximize the objective instead of minimizing (default: False).
    variant (str, optional): ``"torch"`` (default), ``"reference"`` or ``"optax"``: where eps
        and the bias corrections sit (see above). ``"reference"`` is the authors' code, whose
        step is the others' times (1 - b2^t)^(1/2 - p): a warm-up over ~5000 steps.
    foreach (bool, optional): use the ``torch._foreach_*`` implementation; ``None`` picks it
        where the fused path does not apply (default: None). ``False`` (with ``fused`` unset or
        False) runs the canonical kernel tensor by tensor.
    capturable (bool, optional): keep ``step`` on the parameter's device and never read it on
        the host, so the step can be captured in a CUDA graph (default: False).
    differentiable (bool, optional): run the step with autograd enabled (default: False).
    fused (bool, optional): run padam_core's compiled multi-tensor kernel directly on the
        tensors' memory, one call for all tensors of a group (default: None). ``None`` takes it
        wherever it is available (CPU tensors with numba installed, dense gradients, not
        differentiable or capturable, not while ``torch.compile`` traces, where the foreach path
        compiles instead); ``True`` requires it (a ``RuntimeError`` where it is impossible; under
        ``torch.compile`` the call is a graph break); ``False`` never takes it. CUDA tensors use
        ``padam_core.fused_cuda`` on torch's current stream when CuPy is installed.

State per parameter, named as in ``torch.optim.Adam`` so checkpoints interchange: ``step``
(float32 scalar tensor), ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with amsgrad,
``max_exp_avg_sq`` (v_hat). float16/bfloat16 parameters keep float32 moments and are updated in
float32, then rounded once.

Example:
    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = Padam(model.parameters(), lr=0.1, partial=0.125, weight_decay=5e-4)
    >>> loss = model(torch.randn(8, 4)).square().mean()
    >>> loss.backward()
    >>> optimizer.step()

References:
    Chen et al., "Closing the Generalization Gap of Adaptive Gradient Methods in Training Deep
    Neural Networks", arXiv:1806.06763 (IJCAI 2020).
"""


# --------------------------------------------------------------------------- functional API
