r"""``padam``: the Padam optimizer as an optax alias (a chain of small transformations)."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import optax

import padam_core
from padam_core.hyperparameters import is_traced
from padam_core.schedules import PartialLike
from padam_jax.guard import check_skip_nonfinite, skip_nonfinite_steps
from padam_jax.transform import _scale_by_padam, check_hyperparameter_dtypes, check_partial

__all__ = ["padam"]

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]


def padam(
    learning_rate: ScalarOrSchedule = padam_core.DEFAULT_LR,
    b1: float | jax.Array = padam_core.DEFAULT_B1,
    b2: float | jax.Array = padam_core.DEFAULT_B2,
    eps: float | jax.Array = padam_core.DEFAULT_EPS,
    partial: PartialLike | jax.Array = padam_core.DEFAULT_PARTIAL,
    weight_decay: ScalarOrSchedule = padam_core.DEFAULT_WEIGHT_DECAY,
    *,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = True,
    maximize: bool = False,
    variant: str = padam_core.DEFAULT_VARIANT,
    mu_dtype: Any | None = None,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    skip_nonfinite: bool = False,
) -> optax.GradientTransformation:
    r"""Padam: AMSGrad with the denominator raised to a partial power p in [0, 1/2].

    For parameters theta and gradients g at step t = 1, 2, ...::

        g     = -g                                    if maximize
        g     = g + lambda * theta                    coupled L2 weight decay (default)
        m     = b1 * m + (1 - b1) * g
        v     = b2 * v + (1 - b2) * |g|^2
        v_hat = max(v_hat, v)
        theta = theta - alpha * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v_hat) + eps)^(2 p)

    (the ``reference`` variant, the authors' code; the default ``torch`` variant is
    theta - alpha / (1 - b1^t) * m / ((v_hat / (1 - b2^t))^p + eps), the full step from t = 1;
    see :func:`scale_by_padam` for all three). With ``decoupled_weight_decay=True`` the L2
    term leaves the gradient and theta = theta * (1 - alpha * lambda) is applied with the step,
    as in ``optax.adamw``.

    ==========  ==========================  ==============================================
    symbol      argument                    meaning
    ==========  ==========================  ==============================================
    alpha       ``learning_rate``           step size (a float or an optax schedule)
    b1, b2      ``b1, b2``                  decay rates of the moments
    eps         ``eps``                     added to the denominator
    p           ``partial``                 partial power in [0, 1/2] (or a schedule of t)
    lambda      ``weight_decay``            weight decay (a float or a schedule)
    ==========  ==========================  ==============================================

    The chain is ``[scale(-1) if maximize] -> [add_decayed_weights if coupled] ->
    scale_by_padam -> [add_decayed_weights if decoupled] -> scale_by_learning_rate``, so the
    pieces compose like optax's own aliases (``optax.adam``, ``optax.adamw``).

    Args:
      learning_rate: alpha, a float or a schedule ``step -> value``.
      b1: decay rate of the first moment.
      b2: decay rate of the second moment.
      eps: term added to the denominator.
      partial: the partial power p (the paper's 1/8 by default): a number, a
        :mod:`padam_core.schedules` schedule (``linear(0.5, 0.125, steps=1000)``) or any
        callable of **the 1-based step count t** (``count + 1``, the step being taken; optax's
        own schedules, e.g. the learning rate's, take the 0-based ``count``). Evaluated inside
        ``update``, on the traced count under ``jit`` (no recompilation as p changes).
      weight_decay: lambda; 0 disables it.
      decoupled_weight_decay: AdamW-style decay instead of L2 in the gradient.
      amsgrad: keep the running max of v (Padam's default); ``False`` gives Adam's denominator.
      maximize: ascend the objective instead of descending it.
      variant: ``"torch"`` (default), ``"reference"`` or ``"optax"``.
      mu_dtype: dtype of the stored first moment (see :func:`scale_by_padam`).
      mask: a pytree of booleans (or a function of the parameters returning one) saying which
        parameters get weight decay, as in ``optax.adamw``.
      skip_nonfinite: when a gradient leaf holds a NaN or inf, skip the step: the updates are
        -0.0 (``optax.apply_updates`` leaves the parameters bitwise unchanged), every state in
        the chain stays as it was, and :func:`padam_jax.skipped_steps` goes up by one. The
        state is then a :class:`padam_jax.SkipNonfiniteState` around the chain's.

    Returns:
      An ``optax.GradientTransformation``. ``optax.inject_hyperparams(padam)(...)`` makes the
      numeric arguments (learning rate, partial, betas, eps, weight decay) part of the state, so
      they can change during training. They are then arrays, so they are not range-checked;
      with 16-bit parameters pass ``hyperparam_dtype=jnp.float32`` (16-bit hyperparameters
      are refused: b2 = 0.999 rounds to 1.0 in bfloat16). A padam_core schedule given to
      ``inject_hyperparams`` as ``partial`` keeps t 1-based (it is an optax stateful schedule
      whose state is t); a plain callable is an optax schedule there, called with optax's
      0-based count: pass ``static_args="partial"`` to hand it to padam as a 1-based schedule.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from padam_jax import padam
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> optimizer = padam(learning_rate=0.1, partial=0.125)
      >>> state = optimizer.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = optimizer.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Chen et al., "Closing the Generalization Gap of Adaptive Gradient Methods in Training Deep
      Neural Networks", arXiv:1806.06763 (IJCAI 2020).
    """
    checked: dict[str, Any] = {
        "maximize": maximize,
        "decoupled_weight_decay": decoupled_weight_decay,
    }
    # Every value that is not a schedule is checked: None in particular is refused (optax reads
    # learning_rate=None as "no scaling", which would silently ascend).
    if not callable(learning_rate) or learning_rate is None:
        checked["lr"] = learning_rate
    if not callable(weight_decay) or weight_decay is None:
        checked["weight_decay"] = weight_decay
    padam_core.validate_hyperparameters(names={"lr": "learning_rate"}, **checked)
    check_hyperparameter_dtypes(learning_rate=learning_rate, weight_decay=weight_decay)
    check_partial(partial)
    check_skip_nonfinite(skip_nonfinite)

    transforms = []
    if maximize:
        # docs/numerics.md's order: g <- -g first, so the coupled L2 term below is not negated.
        transforms.append(optax.scale(-1.0))
    # The decay transform is always in the chain (whatever the value of weight_decay), so
    # padam(...) and optax.inject_hyperparams(padam)(...) build the same state structure.
    decay = _decayed_weights(weight_decay, mask)
    if not decoupled_weight_decay:
        transforms.append(decay)
    transforms.append(
        _scale_by_padam(
            b1=b1,
            b2=b2,
            eps=eps,
            partial=partial,
            amsgrad=amsgrad,
            variant=variant,
            mu_dtype=mu_dtype,
            updates_in_grad_dtype=False,  # rounded once, at the end of the chain
        )
    )
    if decoupled_weight_decay:
        # -alpha * (u + lambda * theta) = theta * (1 - alpha * lambda) - alpha * u
        # (docs/numerics.md).
        transforms.append(decay)
    transforms.append(optax.scale_by_learning_rate(learning_rate))
    optimizer = _in_gradient_dtype(optax.chain(*transforms))
    # The guard wraps the whole chain: it sees the final updates (a -0.0 it wrote before the
    # scale by -learning_rate would come out +0.0) and every link's state.
    return skip_nonfinite_steps(optimizer) if skip_nonfinite else optimizer


def _is_zero(value: Any) -> bool:
    """A concrete zero (Python number or readable array); traced values and schedules are not."""
    if callable(value):
        return False
    if isinstance(value, numbers.Real):
        return value == 0
    return not is_traced(value) and float(value) == 0.0


def _decayed_weights(weight_decay: Any, mask: Any) -> optax.GradientTransformation:
    """``optax.add_decayed_weights``, but a concrete zero needs no params (identity)."""
    inner = optax.add_decayed_weights(weight_decay, mask)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None and _is_zero(weight_decay):
            return updates, state
        if params is None:
            raise ValueError(
                "padam: weight decay needs the parameters: call update(grads, state, params)"
            )
        return inner.update(updates, state, params)

    return optax.GradientTransformation(inner.init, update_fn)


def _in_gradient_dtype(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """optax's convention: updates come back in the gradient's dtype. The chain computes 16-bit
    gradients' updates in float32; they are rounded once, here."""

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        new_updates, new_state = inner.update(updates, state, params)
        cast = jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates)
        return cast, new_state

    return optax.GradientTransformation(inner.init, update_fn)
