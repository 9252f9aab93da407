r"""The functional Padam for torch tensors and its two implementations (one signature).

* ``_single_tensor_padam``: a loop over tensors that calls the canonical kernel
  :func:`padam_core.padam_step` on torch tensors (through ``array_api_compat.torch``) and copies
  the returned arrays back into the parameter and state tensors.
* ``_multi_tensor_padam``: the same maths with ``torch._foreach_*`` ops, one launch per op for
  every tensor of a (device, dtype) group.
* :func:`padam_torch.fused.fused_padam`: padam_core's compiled multi-tensor kernel on the
  tensors' memory (the default where it is available: CPU tensors with numba installed).

:class:`padam_torch.Padam` manages groups and state and calls :func:`padam`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeGuard, cast

import array_api_compat.torch as torch_namespace
import torch
from torch import Tensor
from torch.optim.optimizer import (
    _default_to_fused_or_foreach,
    _foreach_supported_types,
    _get_value,
    _to_scalar,
)

import padam_core
from padam_core import validate_hyperparameters

# partial -> extra square roots after the first (x^(2p) = sqrt^(1+k)(x)): the kernel's own table,
# so both implementations take the chain for exactly the same p.
from padam_core.kernel import SQRT_CHAIN_LENGTHS as _SQRT_CHAINS
from padam_torch import fused as fused_path

__all__ = ["padam"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# A list of tensors as torch._foreach_* take it (and return it: a tuple, in torch's stubs).
_Tensors = list[Tensor] | tuple[Tensor, ...]


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
    fused: bool | None = None,
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
    _fused_views: dict[int, Any] | None = None,
) -> None:
    r"""Functional Padam: updates ``params`` and the state lists in place.

    See :class:`padam_torch.Padam` for the maths and the arguments. ``state_steps`` holds one
    scalar tensor per parameter; it is incremented here. As in torch, ``fused=None`` and
    ``foreach=None`` pick the fastest path available, and ``foreach=False`` alone means the
    single-tensor path.
    """
    if not torch.compiler.is_compiling() and not all(
        isinstance(step, Tensor) for step in state_steps
    ):
        raise RuntimeError("`state_steps` must be a list of singleton tensors")
    # The optimizer validated its groups; a direct caller of this function may not have. The
    # foreach path would read an unknown variant as "optax", so at least that is checked here.
    validate_hyperparameters(variant=variant, amsgrad=amsgrad)
    if fused is None and foreach is None:
        fused = not differentiable and fused_path.usable(params, grads, capturable=capturable)
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and torch.jit.is_scripting():
        raise RuntimeError("torch.jit.script not supported with fused optimizers")
    if fused:
        # dynamo cannot trace the numba call: under torch.compile it is a graph break.
        step = _fused_eager if torch.compiler.is_compiling() else fused_path.fused_padam
        step(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            state_steps,
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
            capturable=capturable,
            differentiable=differentiable,
            views=_fused_views,
        )
        return
    if foreach is None:
        # Tensor betas only work on the single-tensor path: pick it rather than fail.
        tensor_betas = isinstance(beta1, Tensor) or isinstance(beta2, Tensor)
        foreach = False if tensor_betas else _default_foreach(params, differentiable)
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


_fused_eager = torch._disable_dynamo(fused_path.fused_padam)


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
            if max_exp_avg_sq is not None:  # amsgrad
                max_exp_avg_sq = torch.view_as_real(max_exp_avg_sq)
        # In slices of _SLICE elements, so the kernel's temporaries (about six arrays the size
        # of what it is given) stay small; elementwise maths, so the same numbers.
        pieces = _slices(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, whole=differentiable)
        for param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq in pieces:
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
                validate=False,  # validated by Padam; never a host read of a tensor lr per step
            )
            # The kernel is pure: write its results back into the tensors the optimizer owns.
            param.copy_(result.param)
            exp_avg.copy_(result.exp_avg)
            exp_avg_sq.copy_(result.exp_avg_sq)
            if max_exp_avg_sq is not None and result.max_exp_avg_sq is not None:  # amsgrad
                max_exp_avg_sq.copy_(result.max_exp_avg_sq)


_SLICE = 1 << 18  # elements (1 MiB of float32) per kernel call of the single-tensor path


# param, grad, exp_avg, exp_avg_sq and max_exp_avg_sq (None without amsgrad), or slices of them.
_Step = tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]


def _slices(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None, *, whole: bool,
) -> list[_Step]:  # fmt: skip
    """The tensors cut into flat slices of ``_SLICE`` elements; whole when small, when
    ``whole`` (differentiable: autograd sees the tensors as they are) or not contiguous."""
    tensors: _Step = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    present = [t for t in tensors if t is not None]
    size = param.numel()
    if whole or size <= _SLICE or not all(t.is_contiguous() for t in present):
        return [tensors]
    flat_param, flat_grad, flat_m, flat_v = (t.view(-1) for t in tensors[:4])
    flat_max = None if max_exp_avg_sq is None else max_exp_avg_sq.view(-1)
    pieces: list[_Step] = []
    for start in range(0, size, _SLICE):
        end = start + _SLICE
        maximum = None if flat_max is None else flat_max[start:end]
        pieces.append((flat_param[start:end], flat_grad[start:end], flat_m[start:end],
                       flat_v[start:end], maximum))  # fmt: skip
    return pieces


def _host_bias_corrections(beta: float, steps: list[Tensor], *, dtype: torch.dtype) -> list[float]:
    """``1 - beta^t`` per tensor as ``-expm1(t * log(beta))``, exactly as padam_core does:
    host steps give Python doubles (``padam_core.bias_correction`` itself, on Python numbers)."""
    return [
        padam_core.bias_correction(beta, _get_value(step), xp=torch_namespace, dtype=dtype)
        for step in steps
    ]


def _device_bias_corrections(beta: float, steps: list[Tensor], *, dtype: torch.dtype) -> _Tensors:
    """:func:`_host_bias_corrections` kept as tensors of ``dtype`` (capturable, compiled): the
    same ``-expm1(t * log(beta))``, with no host read."""
    log_beta = math.log(beta) if beta > 0 else -math.inf  # expm1(-inf) = -1: bc = 1 at beta = 0
    corrections = torch._foreach_mul([step.to(dtype) for step in steps], log_beta)
    torch._foreach_expm1_(corrections)
    torch._foreach_neg_(corrections)
    return corrections


def _partial_power_(roots: _Tensors, partial: float) -> None:
    """``roots ** (2 * partial)`` in place, where ``roots`` already are square roots (so x^p).

    Repeated ``_foreach_sqrt_`` for partial in {1/2, 1/4, 1/8, 1/16} (as padam_core); the
    caller handles ``partial == 0`` (x^0 = 1 exactly).
    """
    if partial in _SQRT_CHAINS:
        for _ in range(_SQRT_CHAINS[partial]):
            torch._foreach_sqrt_(roots)
    else:
        torch._foreach_pow_(roots, 2.0 * partial)


def _all_floats(values: list[float | Tensor]) -> TypeGuard[list[float]]:
    """Whether the per-tensor scales are Python floats (host steps and lr), not 0-d tensors."""
    return all(isinstance(value, float) for value in values)


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
        device_grads: _Tensors  # the foreach ops that make new gradients return tuples
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
                grads_are_ours = True
        # Saturation, as padam_core's kernel: clip the effective gradient, v and what enters
        # the running max to finfo.max of the compute dtype (no bit changes without overflow).
        largest = torch.finfo(compute_dtype).max
        if not grads_are_ours:
            device_grads = torch._foreach_clamp_max(device_grads, largest)
        else:
            torch._foreach_clamp_max_(device_grads, largest)
        torch._foreach_clamp_min_(device_grads, -largest)

        # m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2 (the kernel's association).
        torch._foreach_mul_(device_exp_avgs, beta1)
        torch._foreach_add_(device_exp_avgs, device_grads, alpha=1 - beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
        torch._foreach_clamp_max_(device_exp_avg_sqs, largest)
        del device_grads

        bc1: list[float] | _Tensors
        bc2: list[float] | _Tensors
        sqrt_bc2: list[float] | _Tensors
        if steps_on_device:
            bc1 = _device_bias_corrections(beta1, device_steps, dtype=compute_dtype)
            bc2 = device_bc2 = _device_bias_corrections(beta2, device_steps, dtype=compute_dtype)
            sqrt_bc2 = torch._foreach_sqrt(device_bc2)
        else:
            bc1 = _host_bias_corrections(beta1, device_steps, dtype=compute_dtype)
            bc2 = host_bc2 = _host_bias_corrections(beta2, device_steps, dtype=compute_dtype)
            sqrt_bc2 = [math.sqrt(correction) for correction in host_bc2]

        second: _Tensors
        if variant == "optax":
            second = torch._foreach_div(device_exp_avg_sqs, bc2)
            torch._foreach_clamp_max_(second, largest)
        else:
            second = device_exp_avg_sqs
        if amsgrad:
            torch._foreach_maximum_(device_max_exp_avg_sqs, second)
            second = device_max_exp_avg_sqs

        # theta -= scale * m / denominator, with a per-tensor scale (Python floats, or 0-d
        # tensors when the steps or lr are tensors), associated as in the kernel.
        roots = torch._foreach_sqrt(second)
        denominator: _Tensors | None = roots
        scale: list[float | Tensor]
        if variant == "reference":
            pairs: Iterable[tuple[float | Tensor, float | Tensor]] = zip(sqrt_bc2, bc1, strict=True)
            scale = [device_lr * root / bc for root, bc in pairs]
            torch._foreach_add_(roots, eps)
            if partial == 0:
                denominator = None  # (sqrt(v_hat) + eps)^0 = 1 exactly
            else:
                _partial_power_(roots, partial)
        else:
            scale = [device_lr / bc for bc in bc1]
            if variant == "torch":
                torch._foreach_div_(roots, sqrt_bc2)
            if partial == 0:
                denominator = [torch.full_like(t, 1.0 + eps) for t in roots]  # x^0 = 1
            else:
                _partial_power_(roots, partial)
                torch._foreach_add_(roots, eps)

        if _all_floats(scale):
            negated = [-value for value in scale]
            if denominator is None:
                torch._foreach_add_(thetas, torch._foreach_mul(device_exp_avgs, negated))
            else:
                torch._foreach_addcdiv_(thetas, device_exp_avgs, denominator, negated)
        else:
            scale_tensors = cast(list[Tensor], scale)  # 0-d tensors: the steps or lr are tensors
            if denominator is None:
                updates = torch._foreach_mul(device_exp_avgs, scale_tensors)
            else:
                updates = torch._foreach_div(device_exp_avgs, denominator)
                torch._foreach_mul_(updates, scale_tensors)
            torch._foreach_sub_(thetas, updates)

        if low_precision:
            torch._foreach_copy_(device_params, thetas)
