"""Pure ``init`` / ``update`` over a collection of arrays, for raw array code.

A collection is one array, a list or tuple of arrays, or a dict of arrays (string keys). The
state is a :class:`PadamState` of collections of the same structure. Both functions return new
arrays and never mutate their inputs, so they work under ``jax.jit`` as well as on NumPy, CuPy
and torch tensors.

>>> import numpy as np, padam_core
>>> params = {"w": np.ones(3), "b": np.zeros(())}
>>> state = padam_core.init(params)
>>> grads = {"w": np.full(3, 0.5), "b": np.asarray(1.0)}
>>> params, state = padam_core.update(grads, state, params, lr=0.1)
>>> state.count
1

``partial`` may be a schedule of the step count (evaluated at ``state.count + 1``, a traced
count under ``jit`` included), and ``skip_nonfinite=True`` returns the inputs unchanged when a
gradient holds NaN or inf (the caller counts skips: the step count did not move):

>>> from padam_core import schedules
>>> bad = {"w": np.full(3, np.nan), "b": np.asarray(1.0)}
>>> same_params, same_state = padam_core.update(
...     bad, state, params, lr=0.1, partial=schedules.linear(0.5, 0.125, steps=100),
...     skip_nonfinite=True)
>>> same_state.count, same_params is params
(1, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

from padam_core.guard import all_finite
from padam_core.hyperparameters import DEFAULT_PARTIAL, is_traced, validate_hyperparameters
from padam_core.kernel import compute_dtype, padam_step
from padam_core.schedules import evaluate_partial, is_schedule, validate_partial

__all__ = ["PadamState", "init", "map_collection", "update", "zeros_state_like"]

Collection = Any  # an array, a list/tuple of arrays, or a dict of arrays


class PadamState(NamedTuple):
    """Padam's state for a collection of parameters."""

    count: Any  # t, the number of steps taken (a Python int, or an int array under jit)
    exp_avg: Collection  # m, first moment
    exp_avg_sq: Collection  # v, second moment
    max_exp_avg_sq: Collection | None  # v_hat, running max (None when amsgrad=False)


def map_collection(function: Callable[..., Any], *collections: Collection) -> Collection:
    """Apply ``function`` leaf by leaf over collections of the same structure."""
    first = collections[0]
    if isinstance(first, Mapping):
        for other in collections[1:]:
            if not isinstance(other, Mapping) or set(other) != set(first):
                raise ValueError(
                    f"Structure mismatch: expected a dict with keys {sorted(first)}, "
                    f"got {sorted(other) if isinstance(other, Mapping) else type(other).__name__}"
                )
        return {key: function(*(c[key] for c in collections)) for key in first}
    if isinstance(first, (list, tuple)):
        for other in collections[1:]:
            if not isinstance(other, (list, tuple)) or len(other) != len(first):
                got = len(other) if isinstance(other, (list, tuple)) else type(other).__name__
                raise ValueError(
                    f"Structure mismatch: expected a sequence of {len(first)} arrays, got {got}"
                )
        return type(first)(function(*items) for items in zip(*collections, strict=True))
    return function(*collections)


def zeros_state_like(param: Any) -> Any:
    """A zero moment for ``param``: float32 for float16/bfloat16 parameters, else its dtype."""
    xp = array_namespace(param)
    return xp.zeros(param.shape, dtype=compute_dtype(param.dtype, xp=xp), device=device(param))


def _zeros_real_like(param: Any) -> Any:
    """A zero second moment: real even for a complex parameter (v holds |g|^2)."""
    xp = array_namespace(param)
    zeros = zeros_state_like(param)
    return xp.real(zeros) if xp.isdtype(zeros.dtype, "complex floating") else zeros


def init(params: Collection, *, amsgrad: bool = True) -> PadamState:
    """Zero state for ``params``; float16/bfloat16 parameters get float32 state."""
    return PadamState(
        count=0,
        exp_avg=map_collection(zeros_state_like, params),
        exp_avg_sq=map_collection(_zeros_real_like, params),
        max_exp_avg_sq=map_collection(_zeros_real_like, params) if amsgrad else None,
    )


def update(
    grads: Collection,
    state: PadamState,
    params: Collection,
    *,
    validate: bool = True,
    skip_nonfinite: bool = False,
    **hyperparameters: Any,
) -> tuple[Collection, PadamState]:
    """One Padam step on every array; returns ``(new_params, new_state)``.

    ``hyperparameters`` are the keyword arguments of :func:`padam_core.padam_step` (``lr``,
    ``b1``, ``b2``, ``eps``, ``partial``, ``weight_decay``, ``decoupled_weight_decay``,
    ``amsgrad``, ``maximize``, ``variant``). ``amsgrad`` defaults to whether the state holds a
    running max. Python values are validated first unless ``validate=False``.

    ``partial`` may also be a schedule of :mod:`padam_core.schedules` or any callable of the
    1-based step count, evaluated at ``state.count + 1``: on a Python count it gives a Python
    float (the square-root fast paths apply at 1/2, 1/4, 1/8, 1/16), on an array count (traced
    under ``jit``) a 0-d array (no recompilation as p changes). A concrete value outside
    [0, 1/2] raises ``ValueError`` naming the step (unless ``validate=False``).

    ``skip_nonfinite=True``: when any gradient holds NaN or inf, ``(params, state)`` come back
    unchanged (the same objects on a concrete check; under ``jit``, every array and the count
    selected with ``where``, bitwise the old values). The state holds no skip counter (that
    would change :class:`PadamState`): a skipped step is one whose count did not move, or
    count :func:`padam_core.all_finite` of the gradients yourself.
    """
    if not isinstance(skip_nonfinite, bool):
        raise ValueError(
            f"Invalid skip_nonfinite value: {skip_nonfinite!r} (expected True or False)"
        )
    hyperparameters.setdefault("amsgrad", state.max_exp_avg_sq is not None)
    partial = hyperparameters.pop("partial", DEFAULT_PARTIAL)
    if validate:
        validate_hyperparameters(**hyperparameters)
        validate_partial(partial)
    amsgrad = hyperparameters["amsgrad"]
    if amsgrad and state.max_exp_avg_sq is None:
        raise ValueError("amsgrad=True but the state was created with init(..., amsgrad=False)")
    count = state.count + 1
    if not validate and is_schedule(partial):
        partial = partial(count)  # no range check, no host read of an array value
    else:
        partial = evaluate_partial(partial, count)  # range-checked when concrete
    hyperparameters["partial"] = partial
    if skip_nonfinite:
        leaves: list[Any] = []
        map_collection(leaves.append, grads)
        finite = all_finite(leaves, xp=array_namespace(*leaves)) if leaves else True
        if finite is True or not is_traced(finite):
            if not bool(finite):
                return params, state
            skip_nonfinite = False  # checked: a plain step follows
    max_sq = state.max_exp_avg_sq if amsgrad else map_collection(lambda _: None, params)

    results = map_collection(
        lambda p, g, m, v, vmax: padam_step(
            p, g, m, v, vmax, count, validate=False, **hyperparameters
        ),
        params,
        grads,
        state.exp_avg,
        state.exp_avg_sq,
        max_sq,
    )

    def field(name: str) -> Collection:
        # Structure comes from params: a lone StepResult is itself a tuple.
        return map_collection(lambda _, result: getattr(result, name), params, results)

    new_state = PadamState(
        count=count,
        exp_avg=field("exp_avg"),
        exp_avg_sq=field("exp_avg_sq"),
        max_exp_avg_sq=field("max_exp_avg_sq") if amsgrad else state.max_exp_avg_sq,
    )
    new_params = field("param")
    if skip_nonfinite:  # traced: select, no host sync (where(False, new, old) is old, bitwise)
        xp = array_namespace(finite)

        def keep(new: Any, old: Any) -> Any:
            return xp.where(finite, new, old)

        new_params = map_collection(keep, new_params, params)
        new_state = PadamState(
            count=xp.where(finite, xp.asarray(count), xp.asarray(state.count)),
            exp_avg=map_collection(keep, new_state.exp_avg, state.exp_avg),
            exp_avg_sq=map_collection(keep, new_state.exp_avg_sq, state.exp_avg_sq),
            max_exp_avg_sq=(
                map_collection(keep, new_state.max_exp_avg_sq, state.max_exp_avg_sq)
                if amsgrad
                else state.max_exp_avg_sq
            ),
        )
    return new_params, new_state
