r"""Padam as a ``torch.optim.Optimizer``, laid out like ``torch/optim/adam.py``.

The :class:`Padam` class manages parameter groups and state only; the maths lives in the
functional :func:`padam`, which dispatches to one of two implementations with one signature:

* ``_single_tensor_padam``: a loop over tensors that calls the canonical kernel
  :func:`padam_core.padam_step` on torch tensors (through ``array_api_compat.torch``) and copies
  the returned arrays back into the parameter and state tensors.
* ``_multi_tensor_padam``: the same maths with ``torch._foreach_*`` ops, one launch per op for
  every tensor of a (device, dtype) group.

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
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

import array_api_compat.torch as torch_namespace
import torch
from torch import Tensor
from torch.optim.optimizer import (
    Optimizer,
    ParamsT,
    _default_to_fused_or_foreach,
    _foreach_supported_types,
    _get_scalar_dtype,
    _get_value,
    _to_scalar,
    _use_grad_for_differentiable,
)

import padam_core
from padam_core import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_WEIGHT_DECAY,
    validate_hyperparameters,
)

# partial -> extra square roots after the first (x^(2p) = sqrt^(1+k)(x)): the kernel's own table,
# so both implementations take the chain for exactly the same p.
from padam_core.kernel import SQRT_CHAIN_LENGTHS as _SQRT_CHAINS

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
        if torch.compiler.is_compiling() or value.requires_grad:
            return value  # left unchecked, as padam_core does for traced values
        return value.item()
    return value


def _validate_group(group: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first invalid hyperparameter of a param group."""
    betas = group.get("betas", (DEFAULT_B1, DEFAULT_B2))
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas!r} (expected a pair (beta1, beta2))")
    partial = group.get("partial", DEFAULT_PARTIAL)
    if isinstance(partial, Tensor):
        raise ValueError(
            f"Invalid partial value: {partial!r} (expected a Python number: it selects "
            "the algorithm of the power)"
        )
    values = {
        "lr": _plain_number(group.get("lr", DEFAULT_LR), "lr"),
        "b1": _plain_number(betas[0], "betas[0]"),
        "b2": _plain_number(betas[1], "betas[1]"),
        "eps": group.get("eps", DEFAULT_EPS),
        "partial": partial,
        "weight_decay": group.get("weight_decay", DEFAULT_WEIGHT_DECAY),
    }
    for flag in ("amsgrad", "decoupled_weight_decay", "maximize", "variant"):
        if flag in group:
            values[flag] = group[flag]
    validate_hyperparameters(names=_ARGUMENT_NAMES, **values)


class Padam(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = DEFAULT_LR,
        betas: tuple[float | Tensor, float | Tensor] = (DEFAULT_B1, DEFAULT_B2),
        eps: float = DEFAULT_EPS,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
        amsgrad: bool = True,
        partial: float = DEFAULT_PARTIAL,
        *,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        variant: str = "reference",
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
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
        }
        _validate_group(defaults)
        defaults["betas"] = tuple(map(_to_scalar, betas))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its hyperparameters are validated before anything changes."""
        _validate_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for param in group["params"]:
                param_state = self.state.get(param, {})
                if param_state and not torch.is_tensor(param_state.get("step", 0.0)):
                    step_value = float(param_state["step"])
                    param_state["step"] = (
                        torch.tensor(step_value, dtype=_get_scalar_dtype(), device=param.device)
                        if group["capturable"]
                        else torch.tensor(step_value, dtype=_get_scalar_dtype())
                    )

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
            params_with_grad: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            max_exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            beta1, beta2 = group["betas"]

            has_complex = self._init_group(
                group,
                params_with_grad,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                state_steps,
            )

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
                has_complex=has_complex,
                amsgrad=group["amsgrad"],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                partial=group["partial"],
                maximize=group["maximize"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                variant=group["variant"],
            )

        return loss

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
                step = step.item()
            if not isinstance(step, (int, float)) or not (math.isfinite(step) and step >= 0):
                raise ValueError(f"{where}: 'step' must be a finite number >= 0, got {step!r}")
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

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from :meth:`state_dict` or from ``torch.optim.Adam``/``AdamW``.

        The checkpoint is checked first (param group sizes, hyperparameter ranges, state keys,
        tensor shapes); a ``ValueError`` leaves the optimizer unchanged. As in torch, loaded
        groups replace the current hyperparameters; keys a checkpoint lacks (``partial`` and
        ``variant`` in an Adam checkpoint) keep their current values. The float32 moments of a
        float16/bfloat16 parameter stay float32 (torch would cast them to the parameter dtype).
        """
        self._check_state_dict(state_dict)
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

        super().load_state_dict(state_dict)

        for group, kept_values in zip(self.param_groups, kept, strict=True):
            group.update(kept_values)
        for param, moments in full_precision.items():
            for key, value in moments.items():
                self.state[param][key] = value.to(
                    device=param.device, dtype=torch.float32, copy=True
                )


Padam.__doc__ = r"""Implements Padam (partially adaptive momentum estimation).

Padam is AMSGrad with the denominator raised to a partial power ``partial`` = p in [0, 1/2]:
p = 1/2 is AMSGrad, p = 0 momentum SGD. With ``variant="reference"`` (default, the authors' code)
each step on a parameter theta with gradient g is

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

``variant="torch"`` places eps and the bias corrections as ``torch.optim.Adam`` does
(:math:`\theta_t = \theta_{t-1} - \frac{\gamma}{1-\beta_1^t} m_t / ((\hat v_t/(1-\beta_2^t))^p
+ \epsilon)`), so with ``partial=0.5`` it equals ``Adam(amsgrad=True)``, ``Adam`` with
``amsgrad=False`` and ``AdamW`` with ``decoupled_weight_decay=True``. ``variant="optax"`` is
``optax.amsgrad``'s placement (:math:`\hat v_t = \max(\hat v_{t-1}, v_t/(1-\beta_2^t))`,
:math:`\theta_t = \theta_{t-1} - \gamma \frac{m_t}{1-\beta_1^t} / (\hat v_t^p + \epsilon)`).

Args:
    params (iterable): iterable of parameters or named_parameters to optimize, or of dicts
        defining parameter groups (each group may override any hyperparameter below).
    lr (float, Tensor, optional): learning rate gamma (default: 0.1, the paper's). A 1-element
        tensor lets ``torch.compile`` reuse one graph while a scheduler changes it.
    betas (tuple[float, float], optional): b1, b2 of the moment averages (default: (0.9, 0.999)).
    eps (float, optional): epsilon of the denominator (default: 1e-8).
    weight_decay (float, optional): lambda; L2 penalty added to the gradient, or AdamW-style
        decay with ``decoupled_weight_decay=True`` (default: 0).
    amsgrad (bool, optional): keep the running max of v (Padam's default: True).
    partial (float, optional): the partial power p, 0 <= p <= 1/2 (default: 0.125, the paper's).
        p in {1/2, 1/4, 1/8, 1/16} is computed with a chain of square roots.
    decoupled_weight_decay (bool, optional): decay the parameter as AdamW does (default: False).
    maximize (bool, optional): maximize the objective instead of minimizing (default: False).
    variant (str, optional): ``"reference"`` (default), ``"torch"`` or ``"optax"``: where eps
        and the bias corrections sit (see above).
    foreach (bool, optional): use the ``torch._foreach_*`` implementation; ``None`` picks it on
        CUDA as torch does, and also for plain CPU tensors, where it is the faster one
        (default: None). ``False`` runs the canonical kernel tensor by tensor.
    capturable (bool, optional): keep ``step`` on the parameter's device and never read it on
        the host, so the step can be captured in a CUDA graph (default: False).
    differentiable (bool, optional): run the step with autograd enabled (default: False).

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


def padam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    has_complex: bool = False,
    *,
    amsgrad: bool,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    partial: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    variant: str,
) -> None:
    r"""Functional Padam: updates ``params`` and the state lists in place.

    See :class:`Padam` for the maths and the arguments. ``state_steps`` holds one scalar tensor
    per parameter; it is incremented here before the update.
    """
    if not torch.compiler.is_compiling() and not all(
        isinstance(step, Tensor) for step in state_steps
    ):
        raise RuntimeError("`state_steps` must be a list of singleton tensors")
    # The optimizer validated its groups; a direct caller of this function may not have. The
    # foreach path would read an unknown variant as "optax", so at least that is checked here.
    validate_hyperparameters(variant=variant, amsgrad=amsgrad)
    if foreach is None:
        foreach = _default_foreach(params, differentiable)
    if foreach and torch.jit.is_scripting():
        raise RuntimeError("torch.jit.script not supported with foreach optimizers")
    implementation = _multi_tensor_padam if foreach else _single_tensor_padam
    implementation(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        capturable=capturable,
        differentiable=differentiable,
        has_complex=has_complex,
        amsgrad=amsgrad,
        beta1=beta1,
        beta2=beta2,
        lr=lr,
        weight_decay=weight_decay,
        eps=eps,
        partial=partial,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        variant=variant,
    )


def _default_foreach(params: list[Tensor], differentiable: bool) -> bool:
    """torch's rule (foreach on CUDA-like devices, never when differentiable), extended to plain
    CPU tensors: there the foreach path measured 2-3x faster than the kernel loop, whose pure
    functions allocate a temporary per operation (docs/torch.md)."""
    _, foreach = _default_to_fused_or_foreach(params, differentiable, use_fused=False)
    if foreach or differentiable or torch.jit.is_scripting():
        return foreach
    return all(type(p) in _foreach_supported_types and p.device.type == "cpu" for p in params)


def _single_tensor_padam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    capturable: bool,
    differentiable: bool,
    has_complex: bool,
    amsgrad: bool,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    partial: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    variant: str,
) -> None:
    """The canonical kernel on each tensor; its results are copied into params and state."""
    lr, beta1, beta2 = _to_scalar(lr), _to_scalar(beta1), _to_scalar(beta2)
    for index, param in enumerate(params):
        grad, exp_avg, exp_avg_sq = grads[index], exp_avgs[index], exp_avg_sqs[index]
        max_exp_avg_sq = max_exp_avg_sqs[index] if amsgrad else None
        step_tensor = state_steps[index]
        step_tensor += 1
        # Bias corrections: a Python step makes padam_core compute 1 - b^t in double precision
        # (torch's Adam also reads the step on the host); capturable/compiled/differentiable keep
        # the tensor, and padam_core then computes -expm1(t log b) in the parameter's dtype.
        step = step_tensor if (capturable or differentiable) else _get_value(step_tensor)
        if torch.is_complex(param):
            # As torch: real and imaginary parts are separate real parameters.
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            exp_avg, exp_avg_sq = torch.view_as_real(exp_avg), torch.view_as_real(exp_avg_sq)
            if amsgrad:
                max_exp_avg_sq = torch.view_as_real(max_exp_avg_sq)
        result = padam_core.padam_step(
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
            step,
            lr=lr,
            b1=beta1,
            b2=beta2,
            eps=eps,
            partial=partial,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            variant=variant,
            xp=torch_namespace,
        )
        # The kernel is pure: write its results back into the tensors the optimizer owns.
        param.copy_(result.param)
        exp_avg.copy_(result.exp_avg)
        exp_avg_sq.copy_(result.exp_avg_sq)
        if amsgrad:
            max_exp_avg_sq.copy_(result.max_exp_avg_sq)


def _bias_corrections(
    beta: float, steps: list[Tensor], *, on_device: bool, dtype: torch.dtype
) -> list[float] | list[Tensor]:
    """``1 - beta^t`` per tensor as ``-expm1(t * log(beta))``, exactly as padam_core does.

    Host steps give Python doubles (like ``padam_core.bias_correction`` with a Python step);
    ``on_device`` keeps them as tensors of ``dtype`` (capturable, compiled) with no host read.
    """
    if not on_device:
        if beta == 0:
            return [1.0 for _ in steps]
        log_beta = math.log(beta)
        return [-math.expm1(_get_value(step) * log_beta) for step in steps]
    log_beta = math.log(beta) if beta > 0 else -math.inf  # expm1(-inf) = -1: bc = 1 at beta = 0
    corrections = torch._foreach_mul([step.to(dtype) for step in steps], log_beta)
    torch._foreach_expm1_(corrections)
    torch._foreach_neg_(corrections)
    return corrections


def _partial_power_(roots: list[Tensor], partial: float) -> None:
    """``roots ** (2 * partial)`` in place, where ``roots`` already are square roots (so x^p).

    Repeated ``_foreach_sqrt_`` for partial in {1/2, 1/4, 1/8, 1/16} (as padam_core); the
    caller handles ``partial == 0`` (x^0 = 1 exactly).
    """
    if partial in _SQRT_CHAINS:
        for _ in range(_SQRT_CHAINS[partial]):
            torch._foreach_sqrt_(roots)
    else:
        torch._foreach_pow_(roots, 2.0 * partial)


def _group_by_device_and_dtype(
    *tensor_lists: list[Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[list[Tensor]]]:
    """Split parallel lists by the (device, dtype) of the first list (the parameters).

    torch's own grouping helper insists that every list shares the parameter's dtype; float32
    moments of bfloat16 parameters do not, hence this small version.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[list[Tensor]]] = {}
    for index, param in enumerate(tensor_lists[0]):
        lists = groups.setdefault((param.device, param.dtype), [[] for _ in tensor_lists])
        for target, source in zip(lists, tensor_lists, strict=True):
            if source:
                target.append(source[index])
    return groups


def _multi_tensor_padam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    capturable: bool,
    differentiable: bool,
    has_complex: bool,
    amsgrad: bool,
    beta1: float | Tensor,
    beta2: float | Tensor,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    partial: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    variant: str,
) -> None:
    """The kernel's maths with ``torch._foreach_*`` ops over each (device, dtype) group."""
    if len(params) == 0:
        return
    if differentiable:
        raise RuntimeError("foreach=True does not support differentiable=True (no autograd)")
    beta1, beta2 = _to_scalar(beta1), _to_scalar(beta2)
    if isinstance(beta1, Tensor) or isinstance(beta2, Tensor):
        raise ValueError("betas as Tensors are only supported with foreach=False")
    lr = _to_scalar(lr)
    # Steps stay tensors (no host read) when capturable or while torch.compile traces.
    steps_on_device = capturable or torch.compiler.is_compiling()

    grouped = _group_by_device_and_dtype(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps
    )
    for (device, _dtype), lists in grouped.items():
        device_params, device_grads, device_exp_avgs, device_exp_avg_sqs = lists[:4]
        device_max_exp_avg_sqs, device_steps = lists[4], lists[5]
        if has_complex:
            # As torch: real and imaginary parts are separate real parameters.
            for tensors in (device_params, device_grads, device_exp_avgs, device_exp_avg_sqs):
                tensors[:] = [torch.view_as_real(t) if t.is_complex() else t for t in tensors]
            if amsgrad:
                device_max_exp_avg_sqs[:] = [
                    torch.view_as_real(t) if t.is_complex() else t for t in device_max_exp_avg_sqs
                ]
        real_dtype = device_params[0].dtype
        # float16/bfloat16: compute in float32 against the float32 moments, round back once.
        low_precision = real_dtype in _LOW_PRECISION
        compute_dtype = torch.float32 if low_precision else real_dtype
        if low_precision:
            thetas = [param.to(torch.float32) for param in device_params]
            device_grads = [grad.to(torch.float32, copy=True) for grad in device_grads]
        else:
            thetas = device_params
        device_lr = lr.to(device=device, dtype=compute_dtype) if isinstance(lr, Tensor) else lr

        if steps_on_device or not device_steps[0].is_cpu:
            torch._foreach_add_(device_steps, 1)
        else:
            # A CPU scalar tensor, once, instead of wrapping 1 per step tensor (as torch does).
            torch._foreach_add_(device_steps, torch.tensor(1.0), alpha=1.0)

        # The caller's gradients are never written: the first change makes new tensors
        # (already new for low-precision params, whose float32 copies are ours).
        grads_are_ours = low_precision
        if maximize:
            if grads_are_ours:
                torch._foreach_neg_(device_grads)
            else:
                device_grads = torch._foreach_neg(device_grads)
                grads_are_ours = True
        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(thetas, 1 - device_lr * weight_decay)
            elif grads_are_ours:
                torch._foreach_add_(device_grads, thetas, alpha=weight_decay)
            else:
                device_grads = torch._foreach_add(device_grads, thetas, alpha=weight_decay)

        # m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2 (the kernel's association).
        torch._foreach_mul_(device_exp_avgs, beta1)
        torch._foreach_add_(device_exp_avgs, device_grads, alpha=1 - beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
        del device_grads

        bc1 = _bias_corrections(beta1, device_steps, on_device=steps_on_device, dtype=compute_dtype)
        bc2 = _bias_corrections(beta2, device_steps, on_device=steps_on_device, dtype=compute_dtype)
        if steps_on_device:
            sqrt_bc2 = torch._foreach_sqrt(bc2)
        else:
            sqrt_bc2 = [math.sqrt(correction) for correction in bc2]

        if variant == "optax":
            second = torch._foreach_div(device_exp_avg_sqs, bc2)
        else:
            second = device_exp_avg_sqs
        if amsgrad:
            torch._foreach_maximum_(device_max_exp_avg_sqs, second)
            second = device_max_exp_avg_sqs

        # theta -= scale * m / denominator, with a per-tensor scale (Python floats, or 0-d
        # tensors when the steps or lr are tensors), associated as in the kernel.
        denominator: list[Tensor] | None = torch._foreach_sqrt(second)
        if variant == "reference":
            scale = [device_lr * root / bc for root, bc in zip(sqrt_bc2, bc1, strict=True)]
            torch._foreach_add_(denominator, eps)
            if partial == 0:
                denominator = None  # (sqrt(v_hat) + eps)^0 = 1 exactly
            else:
                _partial_power_(denominator, partial)
        else:
            scale = [device_lr / bc for bc in bc1]
            if variant == "torch":
                torch._foreach_div_(denominator, sqrt_bc2)
            if partial == 0:
                denominator = [torch.full_like(t, 1.0 + eps) for t in denominator]  # x^0 = 1
            else:
                _partial_power_(denominator, partial)
                torch._foreach_add_(denominator, eps)

        if all(isinstance(value, float) for value in scale):
            negated = [-value for value in scale]
            if denominator is None:
                torch._foreach_add_(thetas, torch._foreach_mul(device_exp_avgs, negated))
            else:
                torch._foreach_addcdiv_(thetas, device_exp_avgs, denominator, negated)
        else:
            if denominator is None:
                updates = torch._foreach_mul(device_exp_avgs, scale)
            else:
                updates = torch._foreach_div(device_exp_avgs, denominator)
                torch._foreach_mul_(updates, scale)
            torch._foreach_sub_(thetas, updates)

        if low_precision:
            torch._foreach_copy_(device_params, thetas)
