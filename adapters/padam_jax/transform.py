r"""``scale_by_padam``: Padam's update direction as an optax ``GradientTransformation``.

The maths is :func:`padam_core.padam_step`, run leaf by leaf through ``jax.numpy``; this module
only maps optax's conventions (a pytree of gradients in, a pytree of update directions out, a
``NamedTuple`` state) onto it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import optax

import padam_core
from padam_core.hyperparameters import is_traced
from padam_core.kernel import SQRT_CHAIN_LENGTHS
from padam_core.schedules import (
    PartialLike,
    Schedule,
    evaluate_partial,
    is_schedule,
    validate_partial,
)
from padam_jax.guard import check_skip_nonfinite, skip_nonfinite_steps

__all__ = ["ScaleByPadamState", "scale_by_padam"]

_T = TypeVar("_T")

# scale_by_padam's docstring is _scale_by_padam's (the latter also takes updates_in_grad_dtype,
# which padam_jax.padam sets to False so that a 16-bit update is rounded once, after the lr).

# The core's argument names are optax's (b1, b2, eps, partial); only mu_dtype is new here.
_CHECKED_NAMES = {"b1": "b1", "b2": "b2", "eps": "eps"}


class ScaleByPadamState(NamedTuple):
    """State of :func:`scale_by_padam` (the names of ``optax.scale_by_amsgrad``)."""

    # t, steps taken so far (int32, saturates like every optax count). The name is optax's; as a
    # NamedTuple field it shadows tuple.count, which mypy reports (optax's own states do the same).
    count: jax.Array  # type: ignore[assignment]
    mu: optax.Updates  # m, first moment (mu_dtype; float32 for 16-bit parameters by default)
    nu: optax.Updates  # v, second moment (real, even for complex parameters)
    nu_max: optax.Updates | None  # v_hat, max of v (variant optax: of v/bc2); None w/o amsgrad


def _state_dtype(dtype: Any) -> Any:
    """Moments of 16-bit parameters are float32 (docs/numerics.md: "state kept in float32")."""
    return padam_core.compute_dtype(jnp.dtype(dtype), xp=jnp)


def _real_dtype(dtype: Any) -> Any:
    """v holds |g|^2, so it is real for a complex parameter."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def check_hyperparameter_dtypes(**values: Any) -> None:
    """Reject float16/bfloat16 hyperparameter arrays (a static dtype check, fine under jit).

    ``optax.inject_hyperparams`` stores hyperparameters in the parameters' widest dtype, so with
    bfloat16 parameters b2 = 0.999 arrives as exactly 1.0 (then 1 - b2^t = 0 and the update is
    0/0). A silent NaN is worse than an error that says what to do.
    """
    for name, value in values.items():
        dtype = getattr(value, "dtype", None)
        if dtype is not None and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.float16):
            raise ValueError(
                f"Invalid {name} value: a {jnp.dtype(dtype).name} array ({name} loses its digits "
                f"in 16 bits, e.g. b2 = 0.999 rounds to 1.0 in bfloat16); pass float32 values, "
                "e.g. optax.inject_hyperparams(padam, hyperparam_dtype=jnp.float32)(...)"
            )


def _leaf_name(path: Any) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def check_partial(partial: Any) -> None:
    """A number in [0, 1/2], an array, or a callable of t (``ValueError`` otherwise)."""
    validate_partial(partial, "partial")
    if not is_schedule(partial):
        check_hyperparameter_dtypes(partial=partial)


def partial_at(partial: PartialLike | jax.Array, count: jax.Array) -> Any:
    """p for the step being taken; ``count`` is that step's 1-based t (an int32 array).

    A padam_core Schedule on a concrete count (outside ``jit``) is evaluated on the host, so p
    is a Python float and the kernel's square-root chains apply; a constant one always is.
    Under ``jit`` the schedule runs on the traced count: p changes without a recompilation.
    Any other callable gets the count as optax hands counts to its schedules (an int32 array).
    A concrete value outside [0, 1/2] raises ``ValueError`` naming the step.
    """
    if not is_schedule(partial):
        return partial
    if isinstance(partial, Schedule):
        if partial.kind == "constant":
            return partial(1)
        if not is_traced(count):
            return evaluate_partial(partial, int(count))
    return evaluate_partial(partial, count, xp=jnp)


def switch_on_partial(partial: Any, step: Callable[[Any], _T]) -> _T:
    """``step(partial)``, where ``step`` runs the kernel with that ``partial``.

    The kernel takes its square-root chains only for a Python ``partial``, ``pow`` for any
    other Python number, and ``exp(2p log x)`` for an array (under XLA ~1/4 the cost of
    ``pow``). A Python number is passed as is: its step stays bitwise what it was, also
    inside other fusions (with ``skip_nonfinite``'s select, XLA's inlined ``exp``/``log`` can
    round one element differently, ``pow`` does not). An array ``partial`` (from
    ``optax.inject_hyperparams`` or a schedule, traced under ``jit``) goes through a
    ``lax.switch`` over the whole step: one branch per chain value, taken when the array
    equals it exactly (then the step is bitwise the Python-number step), and the ``exp``/``log``
    branch otherwise. Each branch is a complete fused step, so only the branch taken reads
    and writes memory (under ``vmap`` with a batched ``partial`` the switch becomes a select
    and every branch runs: correct, slower).
    """
    if isinstance(partial, numbers.Real):
        return step(partial)
    if not is_traced(partial):
        # A concrete array (outside jit): pick on the host, so the eager step is the same
        # op-by-op code as for a Python number (a switch would compile, and a compiled step can
        # round differently on sharded and unsharded arrays).
        value = float(partial)
        return step(value if value == 0.0 or value in SQRT_CHAIN_LENGTHS else partial)
    partial = jnp.asarray(partial)
    chains = tuple(SQRT_CHAIN_LENGTHS)
    index = jnp.zeros([], jnp.int32)
    for k, value in enumerate(chains, start=1):
        index = jnp.where(partial == value, k, index)
    branches = [lambda: step(partial)] + [lambda value=value: step(value) for value in chains]
    return jax.lax.switch(index, branches)


def scale_by_padam(
    b1: float | jax.Array = padam_core.DEFAULT_B1,
    b2: float | jax.Array = padam_core.DEFAULT_B2,
    eps: float | jax.Array = padam_core.DEFAULT_EPS,
    partial: PartialLike | jax.Array = padam_core.DEFAULT_PARTIAL,
    *,
    amsgrad: bool = True,
    variant: str = padam_core.DEFAULT_VARIANT,
    mu_dtype: Any | None = None,
    skip_nonfinite: bool = False,
) -> optax.GradientTransformation:
    check_skip_nonfinite(skip_nonfinite)
    inner = _scale_by_padam(
        b1, b2, eps, partial, amsgrad=amsgrad, variant=variant, mu_dtype=mu_dtype,
        updates_in_grad_dtype=True,
    )  # fmt: skip
    return skip_nonfinite_steps(inner) if skip_nonfinite else inner


def _scale_by_padam(
    b1: float | jax.Array = padam_core.DEFAULT_B1,
    b2: float | jax.Array = padam_core.DEFAULT_B2,
    eps: float | jax.Array = padam_core.DEFAULT_EPS,
    partial: PartialLike | jax.Array = padam_core.DEFAULT_PARTIAL,
    *,
    amsgrad: bool = True,
    variant: str = "reference",
    mu_dtype: Any | None = None,
    updates_in_grad_dtype: bool = True,
) -> optax.GradientTransformation:
    r"""Rescale gradients by Padam's partially adaptive denominator.

    For gradients g at step t (state m, v, v_hat zero at t = 0)::

        m     = b1 * m + (1 - b1) * g
        v     = b2 * v + (1 - b2) * |g|^2
        bc1   = 1 - b1^t,  bc2 = 1 - b2^t
        v_hat = max(v_hat, v)        (variant "optax": max(v_hat, v / bc2); v_hat = v without
                                      amsgrad)

    and the update direction u, which a following ``optax.scale_by_learning_rate`` turns into
    ``-learning_rate * u`` (``torch`` is the default; ``reference`` is the authors' published
    code, at every p, and scales the step by (1 - b2^t)^(1/2 - p), a warm-up):

    =============  =================================================  ======================
    ``variant``    u                                                  same as, at p = 1/2
    =============  =================================================  ======================
    ``reference``  sqrt(bc2) / bc1 * m / (sqrt(v_hat) + eps)^(2 p)    keras Adam(amsgrad)
    ``torch``      (1 / bc1) * m / ((v_hat / bc2)^p + eps)            ``torch.optim.Adam``
    ``optax``      (m / bc1) / (v_hat^p + eps)                        ``optax.amsgrad``
    =============  =================================================  ======================

    ==========  ===========  ===============================================
    symbol      argument     meaning
    ==========  ===========  ===============================================
    b1, b2      ``b1, b2``   decay rates of the moments, in [0, 1)
    eps         ``eps``      added to the denominator, >= 0
    p           ``partial``  partial power in [0, 1/2]; 1/2 is AMSGrad/Adam
    ==========  ===========  ===============================================

    Args:
      b1: decay rate of the first moment m.
      b2: decay rate of the second moment v.
      eps: term added to the denominator.
      partial: the partial power p; p = 1/2 gives Adam/AMSGrad, p = 0 momentum SGD. A number,
        an array, a :mod:`padam_core.schedules` schedule, or any callable of the step count
        ``t`` returning p. **t is 1-based**: the count of the step being taken, ``count + 1``
        (optax's own schedules take the 0-based ``count``; ``optax.piecewise_constant_schedule``
        passed here would be read one step later). Evaluated inside ``update`` on the state's
        count, so under ``jit`` p changes without a recompilation.
      amsgrad: keep the running maximum ``nu_max`` (Padam's default).
      variant: ``"reference"``, ``"torch"`` or ``"optax"``: where eps and the bias
        corrections sit (table above).
      mu_dtype: dtype of the stored first moment ``mu``; by default float32 for 16-bit
        parameters and the parameter's dtype otherwise. The update is computed in float32 for
        float16/bfloat16 gradients and returned in the gradient's dtype (optax's convention).
      skip_nonfinite: skip a step whose gradients hold a NaN or inf: the updates are -0.0 (so
        ``optax.apply_updates`` leaves the parameters bitwise unchanged), the state stays as it
        was and a counter goes up (:func:`padam_jax.skipped_steps`). The state is then a
        :class:`padam_jax.SkipNonfiniteState` around :class:`ScaleByPadamState`.

    Python numbers are validated here (``ValueError`` naming the argument); arrays, e.g. the
    traced values ``optax.inject_hyperparams`` passes, are not range-checked. With ``partial``
    in {1/2, 1/4, 1/8, 1/16} the power is a chain of square roots, for a Python number and for
    an array (traced under ``jit``: a ``lax.switch`` picks the chain step when the value equals
    one of these, bitwise the Python step); any other array p uses exp(2p log x), ~4x cheaper
    than ``pow`` under XLA, a Python one ``pow`` (see :func:`switch_on_partial`). float16/bfloat16
    hyperparameter arrays are refused (b2 = 0.999 is 1.0 in bfloat16): with 16-bit parameters
    use ``optax.inject_hyperparams(padam, hyperparam_dtype=jnp.float32)``. A schedule's value
    is range-checked at each step whose count is concrete (outside ``jit``).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ScaleByPadamState` (inside a
      :class:`padam_jax.SkipNonfiniteState` with ``skip_nonfinite=True``).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from padam_jax import scale_by_padam
      >>> optimizer = optax.chain(scale_by_padam(partial=0.125), optax.scale(-0.1))
      >>> params = {"w": jnp.ones(3)}
      >>> state = optimizer.init(params)
      >>> updates, state = optimizer.update({"w": jnp.full(3, 0.5)}, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Chen et al., "Closing the Generalization Gap of Adaptive Gradient Methods in Training Deep
      Neural Networks", arXiv:1806.06763 (IJCAI 2020).
    """
    padam_core.validate_hyperparameters(
        names=_CHECKED_NAMES,
        b1=b1,
        b2=b2,
        eps=eps,
        amsgrad=amsgrad,
        variant=variant,
    )
    check_partial(partial)
    check_hyperparameter_dtypes(b1=b1, b2=b2, eps=eps)
    if isinstance(mu_dtype, jax.Array):
        # optax.inject_hyperparams treats callables (jnp.bfloat16 is one) as schedules.
        raise ValueError(
            f"Invalid mu_dtype value: an array {mu_dtype!r} (expected a dtype; with "
            "optax.inject_hyperparams pass it as a string, e.g. mu_dtype='bfloat16')"
        )
    if mu_dtype is not None:
        mu_dtype = jax.dtypes.canonicalize_dtype(mu_dtype)
        if not jnp.issubdtype(mu_dtype, jnp.inexact):
            raise ValueError(f"Invalid mu_dtype value: {mu_dtype} (expected a floating dtype)")

    def init_fn(params: optax.Params) -> ScaleByPadamState:
        def zeros(param: Any, dtype: Any) -> jax.Array:
            # zeros_like keeps the parameter's sharding (and works on abstract shapes).
            return jnp.zeros_like(param, dtype=dtype)

        def first_moment(param: Any) -> jax.Array:
            dtype = _state_dtype(param.dtype) if mu_dtype is None else mu_dtype
            return zeros(param, dtype)

        def second_moment(param: Any) -> jax.Array:
            return zeros(param, _real_dtype(_state_dtype(param.dtype)))

        return ScaleByPadamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(first_moment, params),
            nu=jax.tree.map(second_moment, params),
            nu_max=jax.tree.map(second_moment, params) if amsgrad else None,
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByPadamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByPadamState]:
        del params  # weight decay is a separate transformation (see padam_jax.padam)
        if amsgrad and state.nu_max is None:
            raise ValueError(
                "scale_by_padam(amsgrad=True) got a state without nu_max: it was created "
                "with amsgrad=False"
            )
        treedef: Any  # jaxlib ships no stub for PyTreeDef (flatten_up_to, unflatten)
        paths_and_grads, treedef = jax.tree_util.tree_flatten_with_path(updates)
        try:
            mus = treedef.flatten_up_to(state.mu)
            nus = treedef.flatten_up_to(state.nu)
            nu_maxes = treedef.flatten_up_to(state.nu_max) if amsgrad else [None] * len(mus)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"scale_by_padam: the gradients' tree structure does not match the state's "
                f"(was the state initialised for other parameters?): {error}"
            ) from None
        count = optax.safe_increment(state.count)
        p = partial_at(partial, count)  # t = count: the step being taken, 1 on the first
        for (path, grad), mu in zip(paths_and_grads, mus, strict=True):
            if grad.shape != mu.shape:
                raise ValueError(
                    f"scale_by_padam: gradient {_leaf_name(path)} has shape {grad.shape} but "
                    f"its state has shape {mu.shape}"
                )

        def leaf_steps(p: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
            directions, new_mus, new_nus, new_nu_maxes = [], [], [], []
            for (_, grad), mu, nu, nu_max in zip(paths_and_grads, mus, nus, nu_maxes, strict=True):
                # optax's update is a delta that optax.apply_updates adds to the parameter.
                # The kernel returns param - lr * direction, so it is called with param = 0
                # and lr = 1: the returned "parameter" is exactly -direction (0 - x and 1 * x
                # are exact), from the kernel's own code. The zero is made in the compute
                # dtype, so for 16-bit gradients the direction is computed in float32 and
                # returned in the gradient's dtype (optax's convention); padam_jax.padam keeps
                # it float32 through the learning rate and rounds lr * direction once, at the
                # end of its chain. Under jit this all fuses, no float32 copy of the
                # parameters is stored. Learning rate, weight decay and maximize are separate
                # transformations, composed by padam_jax.padam.
                zero = jnp.zeros_like(grad, dtype=_state_dtype(grad.dtype))
                result = padam_core.padam_step(
                    zero,
                    grad,
                    mu,
                    nu,
                    nu_max,
                    count,
                    lr=1.0,
                    b1=b1,
                    b2=b2,
                    eps=eps,
                    partial=p,
                    amsgrad=amsgrad,
                    variant=variant,
                    xp=jnp,
                    validate=False,  # validated when the transform was made
                )
                direction = -result.param
                directions.append(
                    direction.astype(grad.dtype) if updates_in_grad_dtype else direction
                )
                new_mus.append(result.exp_avg)
                new_nus.append(result.exp_avg_sq)
                new_nu_maxes.append(result.max_exp_avg_sq)
            return directions, new_mus, new_nus, new_nu_maxes

        directions, new_mus, new_nus, new_nu_maxes = switch_on_partial(p, leaf_steps)
        unflatten = treedef.unflatten
        return unflatten(directions), ScaleByPadamState(
            count=count,
            mu=unflatten(new_mus),
            nu=unflatten(new_nus),
            nu_max=unflatten(new_nu_maxes) if amsgrad else None,
        )

    return optax.GradientTransformation(init_fn, update_fn)


scale_by_padam.__doc__ = _scale_by_padam.__doc__
