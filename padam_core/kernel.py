r"""The canonical Padam step, written once against the Python array API standard.

Padam (Chen et al., 2018) is AMSGrad with the denominator raised to a partial power
``partial`` = p in [0, 1/2]: p = 1/2 is AMSGrad, p -> 0 is momentum SGD. For one tensor at step
t = 1, 2, ... (state m, v, v_hat zero at t = 0)::

    g     <- -g                                  if maximize
    g     <- g + lambda * theta                  coupled L2 (default)
    theta <- theta * (1 - alpha * lambda)        decoupled_weight_decay=True (AdamW style)
    m     <- b1 * m + (1 - b1) * g
    v     <- b2 * v + (1 - b2) * |g|^2
    bc1 = 1 - b1^t,  bc2 = 1 - b2^t

and then one of three denominators:

=============  ==========================  ==============================================
variant        running max (amsgrad=True)  update
=============  ==========================  ==============================================
``reference``  v_hat <- max(v_hat, v)      theta -= a * sqrt(bc2)/bc1 * m / (sqrt(v_hat) + eps)^(2p)
``torch``      v_hat <- max(v_hat, v)      theta -= a / bc1 * m / ((v_hat / bc2)^p + eps)
``optax``      v_hat <- max(v_hat, v/bc2)  theta -= a * (m / bc1) / (v_hat^p + eps)
=============  ==========================  ==============================================

(a is the learning rate alpha.)

``reference`` is the authors' published code (and, at p = 1/2, ``keras.optimizers.Adam``);
``torch`` is ``torch.optim.Adam``'s placement of eps and bias corrections; ``optax`` is
``optax.amsgrad``'s. With ``amsgrad=False`` there is no running max: v_hat is v (``optax``: v/bc2).
The default is ``torch``: ``reference``'s step is the others' times (1 - b2^t)^(1/2 - p), a
warm-up over ~5000 steps (docs/numerics.md).

Numerics decisions, made here once for every framework:

* Precision: float64 and float32 parameters compute in their own dtype. float16 and bfloat16
  parameters compute in float32 (state is kept in float32 by :func:`padam_core.init`) and the new
  parameter is cast back once, so eps = 1e-8 cannot underflow and a zero gradient gives no NaN.
* Bias corrections ``1 - b^t`` are computed as ``-expm1(t * log(b))``. With a Python ``int`` step
  this is done in Python double precision; with an array step (a traced count under ``jit``) in
  the compute dtype. ``1 - b**t`` in float32 loses about four digits for b2 = 0.999 at t = 1; the
  expm1 form keeps float32 accuracy, so every framework gets the same factors to ~1e-7.
* ``x^(2p)`` for p in {1/2, 1/4, 1/8, 1/16} is a chain of square roots (a general ``pow`` costs
  5-10x a square root on a CPU); p = 0 gives exactly 1; other Python numbers use ``pow``. The
  chain is only taken when ``partial`` is a Python number; an array (traced) ``partial`` uses
  ``exp(2p * log x)``, ~4x cheaper than ``pow`` under XLA and within docs/numerics.md's tolerances
  (:func:`partial_power`). Adapters that want the chains for a traced p that happens to equal 1/8
  switch between specialised steps themselves (padam_jax does, with ``lax.switch``).
* Saturation instead of overflow: the effective gradient (after maximize and coupled L2 decay)
  is clipped to [-finfo.max, finfo.max] of the compute dtype, and v (after its update) and the
  value that enters the running max (v, or v / bc2 for ``optax``) to at most finfo.max. A finite
  gradient therefore always gives a finite state and a finite parameter, the same on every path
  (torch's foreach path and the fused kernels do exactly these clips), and every state the
  optimizer reaches can be saved and loaded. Without overflow the clips change no bit. (For a
  complex parameter only v is clipped.)
* Complex parameters: the raw array API convention is v from |g|^2 = re(g)^2 + im(g)^2 (never
  g * g), with v and v_hat real. torch's adapter instead treats real and imaginary parts as
  separate parameters, as torch does.

Namespace contract: besides the operators ``+ - * /`` and unary ``-`` on arrays and Python
scalars, the kernel uses only these functions of the namespace ``xp``: ``asarray``, ``astype``,
``sqrt``, ``pow``, ``exp``, ``log``, ``where``, ``maximum``, ``clip``, ``expm1``, ``real``,
``imag``, ``isdtype`` and the dtype objects ``float32``, ``float64``, ``complex64``, ``complex128``
(``float16``/``bfloat16`` where the namespace has them). A shim exposing these can run the kernel
on another array library.

References: Chen, Zhou, Tang, Yang, Cao, Gu, "Closing the Generalization Gap of Adaptive Gradient
Methods in Training Deep Neural Networks", arXiv:1806.06763 (IJCAI 2020); Reddi, Kale, Kumar, "On
the Convergence of Adam and Beyond", ICLR 2018.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from padam_core.hyperparameters import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_VARIANT,
    DEFAULT_WEIGHT_DECAY,
    VARIANTS,
    validate_hyperparameters,
)

__all__ = ["StepResult", "bias_correction", "compute_dtype", "padam_step", "partial_power"]

Array = Any  # any array of a namespace that follows the array API standard
Scalar = Any  # a Python number or a 0-d array (traced under jit)

# partial -> number of extra square roots after the first one: x^(2p) = sqrt^k(x) for x = sqrt(.)
SQRT_CHAIN_LENGTHS = {0.5: 0, 0.25: 1, 0.125: 2, 0.0625: 3}


class StepResult(NamedTuple):
    """The arrays a Padam step returns (inputs are never modified)."""

    param: Array  # new parameter, in the parameter's dtype
    exp_avg: Array  # m, first moment
    exp_avg_sq: Array  # v, second moment
    max_exp_avg_sq: Array | None  # v_hat, running max (None when amsgrad=False)


def _is_python_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def _is_low_precision(dtype: Any, xp: Any) -> bool:
    if dtype == getattr(xp, "float16", None):
        return True
    return "bfloat16" in str(dtype)


def compute_dtype(dtype: Any, *, xp: Any) -> Any:
    """The dtype Padam computes in for a parameter of ``dtype``: float32 for float16/bfloat16."""
    return xp.float32 if _is_low_precision(dtype, xp) else dtype


def _real_dtype(dtype: Any, *, xp: Any) -> Any:
    if dtype == xp.complex64:
        return xp.float32
    if dtype == xp.complex128:
        return xp.float64
    return dtype


def _as_scalar(value: Scalar, dtype: Any, *, xp: Any) -> Scalar:
    """A Python float stays a Python float (it keeps the array's dtype); an array is cast."""
    if _is_python_number(value):
        return float(value)
    # An array stays where it is: re-placing a 0-d value on a sharded JAX array's device (a
    # multi-device Sharding) fails, and 0-d values broadcast onto any device anyway.
    return xp.astype(value if hasattr(value, "dtype") else xp.asarray(value), dtype)


def bias_correction(beta: Scalar, step: Scalar, *, xp: Any, dtype: Any) -> Scalar:
    """``1 - beta**step`` computed as ``-expm1(step * log(beta))`` (see the module docstring)."""
    if _is_python_number(beta) and _is_python_number(step):
        if beta == 0:
            return 1.0
        return -math.expm1(step * math.log(beta))
    log_beta = (
        (math.log(beta) if beta > 0 else -math.inf)
        if _is_python_number(beta)
        else xp.log(_as_scalar(beta, dtype, xp=xp))
    )
    # log(0) = -inf and t >= 1 give expm1(-inf) = -1, so beta = 0 needs no branch here.
    return -xp.expm1(_as_scalar(step, dtype, xp=xp) * log_beta)


def partial_power(root: Array, partial: Scalar, *, xp: Any) -> Array | float:
    """``root ** (2 * partial)`` where ``root`` is already a square root (so this is x^p).

    A Python ``partial``: repeated square roots for {1/2, 1/4, 1/8, 1/16} (within a few ulps of
    ``pow`` and several times faster), exactly ``1.0`` for 0, ``pow`` otherwise (eager NumPy and
    torch compute ``pow`` no slower than ``exp`` and ``log``: measured, 1e6 float32).

    An array ``partial`` (a traced value under ``jit``, where XLA fuses the step and ``pow``
    costs ~4x ``exp(y * log x)``, measured 1e6 float32 on a CPU): ``exp(2p * log(root))``. The
    rounding of 2p * log(root) is amplified by |2p * log(root)|: against mpmath, float32 is
    within 1e-6 relative of the exact power for roots in [1e-4, 1e4] (``pow``: 6e-8), 2e-6 in
    [1e-12, 1e12], 7e-6 in [1e-30, 1e30]; float64 within 2e-15, 4e-15, 1.4e-14. docs/numerics.md's
    tolerances (1e-5 and 1e-12 after 100 steps) hold; tests/core/test_power.py checks. Special
    values as ``pow``: a zero root gives 0, inf gives inf and NaN stays NaN (selected, so no
    log(0) or 0 * inf is computed), and p = 0 gives exactly 1 for every root. (Roots are square
    roots, never negative.)
    """
    if _is_python_number(partial):
        partial = float(partial)
        if partial == 0.0:
            return 1.0
        if partial in SQRT_CHAIN_LENGTHS:
            for _ in range(SQRT_CHAIN_LENGTHS[partial]):
                root = xp.sqrt(root)
            return root
        return xp.pow(root, 2.0 * partial)
    exponent = 2.0 * partial
    usual = (root > 0.0) & (root < math.inf)  # 0, inf and NaN are passed through, not computed
    power = xp.exp(exponent * xp.log(xp.where(usual, root, 1.0)))
    return xp.where(exponent == 0.0, 1.0, xp.where(usual, power, root))


_FLOAT32_MAX = 3.4028234663852886e38  # finfo(float32).max, exact in float32


def _finfo_max(real_dtype: Any, *, xp: Any) -> float:
    """finfo.max of a compute dtype (float32 or float64), as a Python float."""
    return sys.float_info.max if real_dtype == xp.float64 else _FLOAT32_MAX


def _sqrt_scalar(value: Scalar, *, xp: Any) -> Scalar:
    return math.sqrt(value) if _is_python_number(value) else xp.sqrt(value)


def _abs_squared(g: Array, *, xp: Any) -> Array:
    if _isdtype(g.dtype, "complex floating", xp=xp):
        re, im = xp.real(g), xp.imag(g)
        return re * re + im * im
    return g * g


_INEXACT = ("real floating", "complex floating")


def _check_step(step: Any) -> None:
    """A Python step count must be a whole number >= 1 (arrays: traced or host counts)."""
    if isinstance(step, bool) or (
        isinstance(step, numbers.Real) and not (float(step).is_integer() and float(step) >= 1)
    ):
        raise ValueError(f"Invalid step value: {step!r} (expected a whole number >= 1)")
    if not isinstance(step, numbers.Real) and not hasattr(step, "dtype"):
        raise ValueError(f"Invalid step value: {step!r} (expected a whole number >= 1)")


def _isdtype(dtype: Any, kind: Any, *, xp: Any) -> bool:
    """``xp.isdtype``, except that a 16-bit float (e.g. ml_dtypes' bfloat16 in NumPy, which
    ``numpy.isdtype`` refuses) counts as real floating."""
    if _is_low_precision(dtype, xp):
        return kind != "complex floating"
    return bool(xp.isdtype(dtype, kind))


def _check_arrays(param: Array, grad: Array, *state: Array | None, xp: Any) -> None:
    """Shapes equal (no broadcasting) and floating dtypes: static facts, fine under ``jit``."""
    shape = tuple(param.shape)
    if _isdtype(grad.dtype, "complex floating", xp=xp) and not _isdtype(
        param.dtype, "complex floating", xp=xp
    ):
        raise ValueError(
            f"padam_step: grad has dtype {grad.dtype} for a real param of dtype {param.dtype} "
            "(the imaginary part would be dropped)"
        )
    for name, array in zip(("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                           (param, grad, *state), strict=True):  # fmt: skip
        if array is None:
            continue
        if not _isdtype(array.dtype, _INEXACT, xp=xp):
            raise ValueError(
                f"padam_step: {name} has dtype {array.dtype} (expected a floating dtype; "
                "integer and bool arrays would be truncated)"
            )
        other = tuple(array.shape)
        # None: a dimension a graph tracer (TensorFlow) does not know yet.
        if len(other) != len(shape) or any(
            a is not None and b is not None and a != b for a, b in zip(other, shape, strict=True)
        ):
            raise ValueError(
                f"padam_step: {name} has shape {other}, param has {shape} (no broadcasting)"
            )


def padam_step(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Array | None,
    step: Scalar,
    *,
    lr: Scalar = DEFAULT_LR,
    b1: Scalar = DEFAULT_B1,
    b2: Scalar = DEFAULT_B2,
    eps: Scalar = DEFAULT_EPS,
    partial: Scalar = DEFAULT_PARTIAL,
    weight_decay: Scalar = DEFAULT_WEIGHT_DECAY,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = True,
    maximize: bool = False,
    variant: str = DEFAULT_VARIANT,
    xp: Any = None,
    validate: bool = True,
) -> StepResult:
    """One Padam step for one tensor; returns new arrays and never mutates its inputs.

    Args:
      param: the parameter theta.
      grad: its gradient, same shape.
      exp_avg, exp_avg_sq: the moments m and v (v is real for a complex parameter).
      max_exp_avg_sq: the running max v_hat; ``None`` when ``amsgrad=False``.
      step: the count t of this step (1 on the first call): a Python int or a 0-d array.
      lr, b1, b2, eps, partial, weight_decay: alpha, b1, b2, eps, p, lambda of the module
        docstring; Python floats, or 0-d arrays (e.g. traced under ``jit``).
      decoupled_weight_decay: AdamW-style decay theta * (1 - lr * lambda) instead of L2 in g.
      amsgrad: keep the running max v_hat (Padam's default).
      maximize: ascend instead of descend.
      variant: ``"torch"`` (default), ``"reference"`` or ``"optax"`` (table in the module
        docstring).
      xp: the array namespace; found from ``param`` and ``grad`` when omitted.
      validate: check the hyperparameters and ``step`` first with
        :func:`padam_core.validate_hyperparameters` (types always; ranges of concrete values;
        traced values skip the range check, so ``jit`` works). Adapters that validated once at
        construction pass ``False``, so no step reads an array hyperparameter on the host.

    Shapes (no broadcasting) and floating dtypes are always checked (static facts). Each
    returned state array has the dtype of the state array passed in; the parameter keeps its
    dtype.
    """
    if xp is None:
        xp = array_namespace(param, grad)
    if validate:
        validate_hyperparameters(
            lr=lr, b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
        )  # fmt: skip
        _check_step(step)
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"Invalid variant value: {variant!r} (expected one of {VARIANTS})")
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("amsgrad=True needs max_exp_avg_sq (the running max), got None")
    _check_arrays(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None, xp=xp)
    dtype = compute_dtype(param.dtype, xp=xp)
    real_dtype = _real_dtype(dtype, xp=xp)

    def scalar(value: Scalar) -> Scalar:
        return _as_scalar(value, real_dtype, xp=xp)

    # An array partial too: in the compute dtype, so 2p * log(root) keeps the parameter's dtype.
    lr, b1, b2, eps, partial, weight_decay = map(scalar, (lr, b1, b2, eps, partial, weight_decay))
    # copy=False: the kernel never writes into these, so no defensive copies are needed.
    theta = xp.astype(param, dtype, copy=False)
    g = xp.astype(grad, dtype, copy=False)
    m = xp.astype(exp_avg, dtype, copy=False)
    v = xp.astype(exp_avg_sq, real_dtype, copy=False)

    if maximize:
        g = -g
    if not (_is_python_number(weight_decay) and weight_decay == 0.0):
        if decoupled_weight_decay:
            theta = theta * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * theta
    # Saturation (module docstring): clip the effective gradient, v, and what enters the max.
    largest = _finfo_max(real_dtype, xp=xp)
    if not _isdtype(g.dtype, "complex floating", xp=xp):
        g = xp.clip(g, min=-largest, max=largest)

    m = b1 * m + (1.0 - b1) * g
    v = xp.clip(b2 * v + (1.0 - b2) * _abs_squared(g, xp=xp), max=largest)
    bc1 = bias_correction(b1, step, xp=xp, dtype=real_dtype)
    bc2 = bias_correction(b2, step, xp=xp, dtype=real_dtype)

    second = xp.clip(v / bc2, max=largest) if variant == "optax" else v
    if amsgrad:
        v_hat = xp.maximum(xp.astype(max_exp_avg_sq, real_dtype, copy=False), second)
    else:
        v_hat = second

    if variant == "reference":
        denominator = partial_power(xp.sqrt(v_hat) + eps, partial, xp=xp)
        theta = theta - (lr * _sqrt_scalar(bc2, xp=xp) / bc1) * m / denominator
    elif variant == "torch":
        root = xp.sqrt(v_hat) / _sqrt_scalar(bc2, xp=xp)
        theta = theta - (lr / bc1) * m / (partial_power(root, partial, xp=xp) + eps)
    else:  # optax
        theta = theta - lr * (m / bc1) / (partial_power(xp.sqrt(v_hat), partial, xp=xp) + eps)

    def output(array: Array, like: Array) -> Array:
        result = xp.astype(array, like.dtype, copy=False)
        # NumPy turns 0-d results into scalars (np.float64 is a numbers.Number): callers get
        # arrays back. Other arrays pass untouched (torch.asarray would warn on autograd inputs).
        return xp.asarray(result) if isinstance(result, numbers.Number) else result

    return StepResult(
        param=output(theta, param),
        exp_avg=output(m, exp_avg),
        exp_avg_sq=output(v, exp_avg_sq),
        max_exp_avg_sq=output(v_hat, max_exp_avg_sq) if amsgrad else None,
    )
