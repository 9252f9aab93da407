r"""Padam as a Keras 3 optimizer, computed by the canonical :func:`padam_core.padam_step`.

The class maps Keras's names and conventions (``beta_1``, ``epsilon``, slot variables, the base
class's clipping, EMA, gradient accumulation, loss scaling) onto the kernel and writes the
kernel's results back with the optimizer's ``assign`` helper only, so JAX's stateless mode,
``tf.distribute`` and XLA compilation work as for the built-in optimizers.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from padam_core import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_VARIANT,
    DEFAULT_WEIGHT_DECAY,
    all_finite,
    padam_step,
    schedules,
    validate_hyperparameters,
)
from padam_core.hyperparameters import check_number
from padam_core.kernel import SQRT_CHAIN_LENGTHS, StepResult

__all__ = ["Padam"]

# Keras's argument names for the core's hyperparameters, so errors name what the user typed.
_KERAS_NAMES = {
    "lr": "learning_rate",
    "b1": "beta_1",
    "b2": "beta_2",
    "eps": "epsilon",
    "weight_decay": "l2_weight_decay",
}
_SLOT_NAMES = ("momentum", "velocity", "velocity_hat")
_SECOND_MOMENT_SLOTS = ("velocity", "velocity_hat")
_LOW_PRECISION = ("float16", "bfloat16")
_COMPLEX_TO_REAL = {"complex64": "float32", "complex128": "float64"}


_NAMESPACE: Any = None  # chosen on first use: Keras fixes its backend once per process


def _kernel_namespace() -> Any:
    """The array namespace the kernel runs on for this process's Keras backend.

    JAX and torch have array-API namespaces (``jax.numpy``, with ``clip`` lowered as ``where``
    for XLA: :mod:`padam_keras._xla`; array-api-compat's torch wrapper); TensorFlow has none, so
    it gets :mod:`padam_keras.keras_ops_namespace`, a shim over ``keras.ops`` that implements
    the kernel's namespace contract.
    """
    global _NAMESPACE
    if _NAMESPACE is None:
        backend = keras.backend.backend()
        if backend == "jax":
            from padam_keras._xla import jax_namespace

            _NAMESPACE = jax_namespace
        elif backend == "torch":
            from array_api_compat import torch as torch_namespace

            _NAMESPACE = torch_namespace
        else:
            from padam_keras import keras_ops_namespace

            _NAMESPACE = keras_ops_namespace
    return _NAMESPACE


def _read(value: Any) -> Any:
    """A backend tensor holding ``value`` (a Keras variable, backend variable or tensor).

    Reading through ``keras.ops`` honours JAX's ``StatelessScope`` and ``tf.distribute``'s
    per-replica values. On torch the result is detached: the update is not differentiated.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(value, tf.IndexedSlices):
            # Padam's update is dense (every moment decays each step): densify sparse gradients.
            return tf.convert_to_tensor(value)
    tensor = ops.convert_to_tensor(value)
    if backend == "torch":
        tensor = tensor.detach()
    return tensor


def _padam_step(*arrays: Any, **hyperparameters: Any) -> Any:
    """:func:`padam_core.padam_step`; on TensorFlow compiled as one XLA cluster.

    Keras does not XLA-compile ``fit`` on a CPU-only TensorFlow, so the kernel's dozen
    elementwise operations would each be a separate pass over memory (Keras's Adam, written with
    ``assign_add``, makes fewer). Under ``tf.function(jit_compile=True)`` XLA fuses them into a
    few loops; inside an XLA-compiled step the function is simply inlined. The arithmetic is the
    kernel's (XLA may rewrite ``x / sqrt(y)`` as ``x * rsqrt(y)``, as it does for Keras's Adam).
    """
    if keras.backend.backend() != "tensorflow":
        return padam_step(*arrays, **hyperparameters)
    import tensorflow as tf

    # Variables are read here (a tf.function argument must be a tensor, not a variable).
    arrays = tuple(None if a is None else tf.convert_to_tensor(a) for a in arrays)
    hyperparameters = {
        key: tf.convert_to_tensor(value) if hasattr(value, "dtype") else value
        for key, value in hyperparameters.items()
    }
    static = tuple(
        (key, value) for key, value in hyperparameters.items() if not hasattr(value, "dtype")
    )
    dynamic = {key: value for key, value in hyperparameters.items() if hasattr(value, "dtype")}
    signature = tuple(
        None if a is None else (_static_shape(a), str(a.dtype)) for a in arrays
    )  # one function (one trace) per shape: no retracing warnings
    return _xla_padam_step(static, signature)(arrays, dynamic)


@functools.cache
def _xla_padam_step(static: tuple[tuple[str, Any], ...], signature: Any) -> Any:
    import tensorflow as tf

    def step(arrays: tuple[Any, ...], dynamic: dict[str, Any]) -> Any:
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, count = arrays
        return padam_step(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, count, **dict(static), **dynamic
        )

    return tf.function(step, jit_compile=True, autograph=False)


def _as_hyperparameter(value: Any, name: str) -> float:
    """A Python float (keeps the kernel's square-root chains and the parameter's dtype).

    NumPy numbers and concrete 0-d arrays are read (padam_core's rule); anything else, and a
    traced value (a constructor argument cannot change later anyway), is refused."""
    number = check_number(value, name)
    if number is None:
        raise ValueError(f"Invalid {name} value: a traced array (expected a concrete number)")
    return number


def _check_partial(value: Any) -> float | Callable[[Any], Any]:
    """A ``partial`` argument: a number in [0, 1/2] (as a float) or a schedule/callable of t."""
    if schedules.is_schedule(value):
        return value
    number = _as_hyperparameter(value, "partial")
    validate_hyperparameters(names=_KERAS_NAMES, partial=number)
    return number


def _host_step() -> bool:
    """Whether the step count can be read on the host now: eager torch (not torch.compile, not
    a stateless scope). TensorFlow and JAX always use the count as a tensor, so eager and
    compiled steps compute the same thing (and a compiled step needs no host sync)."""
    if keras.backend.backend() != "torch":
        return False
    import torch
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    return not (in_stateless_scope() or torch.compiler.is_compiling())


def _float64_variables() -> bool:
    """Whether this backend stores float64 variables (JAX only with x64 enabled)."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    return bool(jax.config.read("jax_enable_x64"))


# Padam's variables after the slots (not in Keras's Adam): a weight list or a saved store
# without them (Adam(amsgrad=True)'s, or a file written before they existed) still loads.
_EXTRA_VARIABLES = 2


@keras.saving.register_keras_serializable(package="padam")
class Padam(keras.optimizers.Optimizer):
    r"""Padam: partially adaptive momentum estimation (Chen et al., 2018).

    AMSGrad whose denominator is raised to a partial power ``partial`` = p in [0, 1/2]: p = 1/2
    is AMSGrad (``keras.optimizers.Adam(amsgrad=True)``), p -> 0 is momentum SGD. For each
    variable theta with gradient g, at step t = ``iterations + 1``::

        g     <- -g                                  if maximize
        g     <- g + l2_weight_decay * theta         coupled L2 (the paper's)
        theta <- theta * (1 - lr * weight_decay)     decoupled (Keras's weight_decay, AdamW)
        m     <- beta_1 * m + (1 - beta_1) * g                 (slot "momentum")
        v     <- beta_2 * v + (1 - beta_2) * g^2               (slot "velocity")
        v_hat <- max(v_hat, v)                                 (slot "velocity_hat", amsgrad)
        bc1 = 1 - beta_1^t,  bc2 = 1 - beta_2^t
        theta <- theta - lr * sqrt(bc2) / bc1 * m / (sqrt(v_hat) + epsilon)^(2 * partial)

    That last line is ``variant="reference"`` (the authors' code, and Keras's Adam at p = 1/2;
    its step is the others' times (1 - b2^t)^(1/2 - p), a warm-up). The default
    ``variant="torch"`` uses ``theta -= lr / bc1 * m / ((v_hat / bc2)^p + eps)``
    (``torch.optim.Adam``'s placement of eps) and ``variant="optax"`` keeps
    ``v_hat <- max(v_hat, v / bc2)`` and uses ``theta -= lr * (m / bc1) / (v_hat^p + eps)``
    (``optax.amsgrad``'s). With ``amsgrad=False`` there is no running max (v_hat is v) and no
    ``velocity_hat`` slot. The arithmetic is :func:`padam_core.padam_step`'s, shared with the
    torch and optax adapters, so the same hyperparameters give the same trajectory.

    ============  =========================  ===============================================
    symbol        argument                   default
    ============  =========================  ===============================================
    lr            ``learning_rate``          0.1 (the paper's), float or LearningRateSchedule
    beta_1        ``beta_1``                 0.9
    beta_2        ``beta_2``                 0.999
    eps           ``epsilon``                1e-8 (Keras's Adam uses 1e-7; Padam uses 1e-8
                                             like the paper and the torch/optax adapters)
    p             ``partial``                0.125 (the paper's p = 1/8)
    lambda (L2)   ``l2_weight_decay``        0.0, coupled: added to the gradient
    lambda (dec.) ``weight_decay``           None, Keras's decoupled decay (see below)
    ============  =========================  ===============================================

    Weight decay: Keras's ``weight_decay`` argument keeps its Keras meaning, decoupled decay
    ``theta <- theta * (1 - lr * weight_decay)`` before the update (AdamW style). The paper's
    form is the coupled L2 penalty ``l2_weight_decay``, which adds ``l2_weight_decay * theta``
    to the gradient and so also feeds the moments. Use one or the other, not both. Both are
    computed inside the kernel, in the variable's dtype, and both honour
    :meth:`exclude_from_weight_decay`.

    Precision: float32/float64 variables compute in their own dtype. float16/bfloat16 variables
    get float32 slot variables and the update is computed in float32 and rounded once, so a
    zero gradient never gives NaN (eps = 1e-8 would underflow in float16). The bias corrections
    ``1 - beta^t`` are computed as ``-expm1(t * log(beta))`` from the iteration count, in the
    variable's compute dtype, which keeps float32 accuracy where ``1 - beta**t`` would lose about
    four digits at t = 1. Under ``mixed_float16`` the variables are float32 and Keras wraps the
    optimizer in a ``LossScaleOptimizer`` as for any built-in optimizer.

    Complex variables (JAX and torch backends): v is real, from |g|^2 = re(g)^2 + im(g)^2, as in
    :mod:`padam_core`; TensorFlow does not mix real and complex tensors, so there ``build``
    raises a ``ValueError``.

    Args:
        learning_rate: A float or a ``keras.optimizers.schedules.LearningRateSchedule``.
        beta_1: Decay rate of the first moment, 0 <= beta_1 < 1.
        beta_2: Decay rate of the second moment, 0 <= beta_2 < 1.
        epsilon: Added to the root of the second moment, > 0. Default 1e-8 (not Keras's 1e-7).
        partial: The partial power p, 0 <= partial <= 0.5.
        amsgrad: Keep the running max ``velocity_hat`` (Padam's default, as in the paper).
        variant: ``"torch"`` (default), ``"reference"`` or ``"optax"`` (formulas above).
        l2_weight_decay: Coupled L2 weight decay (the paper's), >= 0.
        maximize: Ascend the objective instead of descending it.
        {{base_optimizer_keyword_args}}

    Example:

    >>> import keras
    >>> from padam_keras import Padam
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=Padam(learning_rate=0.1, partial=0.125), loss="mse")

    References: Chen, Zhou, Tang, Yang, Cao, Gu, "Closing the Generalization Gap of Adaptive
    Gradient Methods in Training Deep Neural Networks", arXiv:1806.06763 (IJCAI 2020).
    """

    # While building slots for a float16/bfloat16 variable this holds "float32" (see build).
    _slot_dtype_override: str | None = None
    built: bool  # keras.optimizers.Optimizer's flag (Keras is untyped: declared for mypy)

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = DEFAULT_LR,
        beta_1: float = DEFAULT_B1,
        beta_2: float = DEFAULT_B2,
        epsilon: float = DEFAULT_EPS,
        partial: float | Callable[[Any], Any] = DEFAULT_PARTIAL,
        amsgrad: bool = True,
        variant: str = DEFAULT_VARIANT,
        l2_weight_decay: float = DEFAULT_WEIGHT_DECAY,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        loss_scale_factor: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Validate everything before the base class creates any variable.
        if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) and not (
            callable(learning_rate)
        ):
            # Keras refuses an int learning rate: always a float (None, str, ... are refused).
            learning_rate = _as_hyperparameter(learning_rate, "learning_rate")
            validate_hyperparameters(names=_KERAS_NAMES, lr=learning_rate)
        hyperparameters = {
            "beta_1": beta_1,
            "beta_2": beta_2,
            "epsilon": epsilon,
            "l2_weight_decay": l2_weight_decay,
        }
        hyperparameters = {key: _as_hyperparameter(v, key) for key, v in hyperparameters.items()}
        partial = _check_partial(partial)
        if not isinstance(skip_nonfinite, bool):
            raise ValueError(
                f"Invalid skip_nonfinite value: {skip_nonfinite!r} (expected True or False)"
            )
        validate_hyperparameters(
            names=_KERAS_NAMES,
            b1=hyperparameters["beta_1"],
            b2=hyperparameters["beta_2"],
            eps=hyperparameters["epsilon"],
            weight_decay=hyperparameters["l2_weight_decay"],
            variant=variant,
            amsgrad=amsgrad,
            maximize=maximize,
        )
        if weight_decay is not None:
            weight_decay = _as_hyperparameter(weight_decay, "weight_decay")
            validate_hyperparameters(
                names={"weight_decay": "weight_decay"}, weight_decay=weight_decay
            )
            if weight_decay > 0.0 and hyperparameters["l2_weight_decay"] > 0.0:
                raise ValueError(
                    f"Invalid weight decay: weight_decay={weight_decay} (decoupled) and "
                    f"l2_weight_decay={hyperparameters['l2_weight_decay']} (coupled L2) were "
                    "both given (expected at most one of them to be nonzero)"
                )
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta_1 = hyperparameters["beta_1"]
        self.beta_2 = hyperparameters["beta_2"]
        self.epsilon = hyperparameters["epsilon"]
        self.partial = partial
        self.l2_weight_decay = hyperparameters["l2_weight_decay"]
        self.amsgrad = amsgrad
        self.variant = variant
        self.maximize = maximize
        self.skip_nonfinite = skip_nonfinite

    @property
    def partial(self) -> float | Callable[[Any], Any]:
        """p: a float, or a schedule (callable of the 1-based step count ``iterations + 1``).

        Assignable at any time, on every backend: a number is also kept in the non-trainable
        variable ``partial`` that compiled train steps read (so a new value takes effect in an
        already compiled ``fit``); see :meth:`_step_partial` for a schedule."""
        return self._partial

    @partial.setter
    def partial(self, value: Any) -> None:
        value = _check_partial(value)  # a clear error, and nothing changed, for a bad value
        object.__setattr__(self, "_partial", value)
        self._sync_partial_variable()

    def _sync_partial_variable(self) -> None:
        """Write a number p into the ``partial`` variable (a schedule leaves it alone)."""
        variable = getattr(self, "_partial_variable", None)
        if variable is not None and isinstance(self._partial, float):
            # A NumPy value of the variable's dtype: a Python float would pass through float32.
            dtype = keras.backend.standardize_dtype(variable.dtype)
            variable.assign(np.asarray(self._partial, dtype))

    @property
    def skipped_steps(self) -> keras.Variable:
        """How many steps ``skip_nonfinite=True`` skipped (a non-finite gradient); an integer,
        saved with the optimizer. 0 with the guard off. Created by :meth:`build`."""
        if not self.built:
            raise ValueError("Padam.skipped_steps exists once the optimizer is built")
        return self._skipped_steps

    def load_own_variables(self, store: Any) -> None:
        """As the base class, after checking every value first (all or nothing): the iteration
        count and ``skipped_steps`` are whole numbers >= 0, slots are finite,
        ``velocity``/``velocity_hat`` >= 0. A store without Padam's two trailing variables
        (``partial``, ``skipped_steps``: a file saved before they existed) loads the rest.
        ``partial`` stays the optimizer's own (the config's), like the other hyperparameters."""
        variables = self.variables
        if len(store.keys()) in (len(variables), len(variables) - _EXTRA_VARIABLES):
            squares = {id(v) for v in [*self._velocities, *getattr(self, "_velocity_hats", [])]}
            counts = {id(self._iterations), id(self._skipped_steps)}
            loaded = variables[: len(store.keys())]
            for index, variable in enumerate(loaded):
                _check_loaded(variable, store[str(index)], square=id(variable) in squares,
                              count=id(variable) in counts)  # fmt: skip
            for index, variable in enumerate(loaded):
                variable.assign(store[str(index)])
        else:
            super().load_own_variables(store)  # Keras's warning: nothing loaded
        self._sync_partial_variable()  # the variable follows the hyperparameter

    def build(self, var_list: Sequence[keras.Variable]) -> None:
        """Create the slot variables ``momentum``, ``velocity`` and, with amsgrad,
        ``velocity_hat`` (in the same order as ``keras.optimizers.Adam(amsgrad=True)``, so
        ``set_weights`` can move an Adam state into Padam). Slots of a float16/bfloat16
        variable are float32; ``velocity`` and ``velocity_hat`` of a complex variable are real
        (they hold |g|^2)."""
        if self.built:
            return
        if keras.backend.backend() == "tensorflow":
            complex_variables = [
                v.path
                for v in var_list
                if keras.backend.standardize_dtype(v.dtype) in _COMPLEX_TO_REAL
            ]
            if complex_variables:
                raise ValueError(
                    f"Padam cannot update complex variables {complex_variables} on the "
                    "TensorFlow backend: TensorFlow does not mix real and complex tensors in "
                    "arithmetic (use the JAX or torch backend, or split real and imaginary parts)"
                )
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        if self.amsgrad:
            self._velocity_hats = self.add_optimizer_variables(var_list, "velocity_hat")
        # After the slots (the Adam(amsgrad=True) order above stays a prefix). p as a number:
        # float64 where the backend has it, so a float64 model sees p = 0.1, not float32(0.1).
        # Initialized with p itself (0 while partial is a schedule: unused then), not assigned
        # after: build may run inside a traced step or a distribution scope.
        number = self._partial if isinstance(self._partial, float) else 0.0
        self._partial_variable = self.add_variable(
            shape=(),
            initializer=functools.partial(_exact_constant, number),
            dtype="float64" if _float64_variables() else "float32",
            name="partial",
        )
        self._skipped_steps = self.add_variable(
            shape=(), initializer="zeros", dtype=self._iterations.dtype, name="skipped_steps",
            aggregation="only_first_replica",
        )  # fmt: skip

    def add_variable_from_reference(
        self, reference_variable: Any, name: str | None = None, initializer: Any = "zeros"
    ) -> keras.Variable:
        dtype = keras.backend.standardize_dtype(reference_variable.dtype)
        slot_dtype = None
        if name in _SLOT_NAMES and dtype in _LOW_PRECISION:
            slot_dtype = "float32"  # the kernel keeps low-precision state in float32
        elif name in _SECOND_MOMENT_SLOTS and dtype in _COMPLEX_TO_REAL:
            slot_dtype = _COMPLEX_TO_REAL[dtype]  # v holds |g|^2: real
        if slot_dtype is None:
            return super().add_variable_from_reference(reference_variable, name, initializer)
        # The base class (and TensorFlow's device colocation) creates the slot through
        # add_variable with the reference's dtype: override that dtype for this one call.
        self._slot_dtype_override = slot_dtype
        try:
            return super().add_variable_from_reference(reference_variable, name, initializer)
        finally:
            self._slot_dtype_override = None

    def add_variable(self, *args: Any, **kwargs: Any) -> keras.Variable:
        if self._slot_dtype_override is not None:
            kwargs["dtype"] = self._slot_dtype_override
        return super().add_variable(*args, **kwargs)

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> Any:
        """As the base class; a gradient whose shape differs from its variable's raises a
        ``ValueError`` before any variable, slot or the iteration count is changed."""
        variables = (
            self._trainable_variables if trainable_variables is None else trainable_variables
        )
        for gradient, variable in zip(grads, variables, strict=False):  # Keras checks lengths
            if gradient is None:
                continue
            grad_shape, var_shape = _static_shape(gradient), _static_shape(variable)
            if None in grad_shape or None in var_shape:
                continue
            if grad_shape != var_shape:
                name = getattr(variable, "path", None) or getattr(variable, "name", "?")
                raise ValueError(
                    f"Gradient shape {grad_shape} does not match the shape {var_shape} of "
                    f"variable {name!r}"
                )
        if len(grads) == 0:
            return super().apply(grads, trainable_variables)  # Keras's no-op
        if not self.built:
            # As the base class (so p's variable and skipped_steps exist for what follows).
            with keras.name_scope(self.name, caller=self):
                self.build(list(variables))
            self.built = True
        # p of this step, before anything is written (a schedule returning 0.7 raises here).
        object.__setattr__(self, "_current_partial", self._step_partial())
        if not self.skip_nonfinite:
            return super().apply(grads, trainable_variables)
        return self._guarded_apply(grads, trainable_variables)

    def _step_partial(self) -> Any:
        """p for the step being taken (t = ``iterations + 1``, the kernel's ``step``).

        Eager torch: a Python float (the schedule evaluated on the host count), so the
        kernel's square-root chains apply when p is 1/2, 1/4, 1/8 or 1/16. TensorFlow/JAX: a
        number is read from the ``partial`` variable (a compiled train step follows an
        assignment without retracing); a schedule is evaluated on the count tensor inside the
        step (traced under jit: no recompilation as p changes)."""
        partial = self._partial
        if _host_step():
            if isinstance(partial, float):
                return partial
            step = int(keras.ops.convert_to_numpy(self._iterations)) + 1
            value = schedules.evaluate_partial(partial, step, shown="partial")
            return float(check_number(value, "partial") or 0.0)
        if isinstance(partial, float):
            return _read(self._partial_variable)
        count = _read(self._iterations + 1)
        return schedules.evaluate_partial(
            partial, count, xp=_kernel_namespace(), shown="partial", traced=True
        )

    def _unguarded_apply(self, grads: Sequence[Any], trainable_variables: Any) -> None:
        super().apply(grads, trainable_variables)

    def _guarded_apply(self, grads: Sequence[Any], trainable_variables: Any) -> None:
        """``skip_nonfinite=True``: the step if every gradient is finite, else only
        ``skipped_steps += 1`` (all other variables, iterations included, bitwise unchanged).

        One read of the gradients (the finite check). Eager torch branches on the host;
        TensorFlow uses ``ops.cond`` (as ``keras.optimizers.LossScaleOptimizer``), under
        ``tf.distribute`` in a cross-replica ``merge_call`` as it does; JAX (stateless under
        jit) and torch.compile select old or new values with ``where`` (XLA fuses the select
        into the update)."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.distribute.has_strategy() and not (
                tf.__internal__.distribute.strategy_supports_no_merge_call()
            ):
                if tf.distribute.in_cross_replica_context():
                    raise ValueError("apply() must be called in a replica context.")
                tf.distribute.get_replica_context().merge_call(
                    self._cross_replica_guard, args=(grads, trainable_variables)
                )
                return
            ops.cond(
                self._grads_finite(grads),
                lambda: self._unguarded_apply(grads, trainable_variables),
                self._count_skip,
            )
            return
        finite = self._grads_finite(grads)
        if _host_step():
            if bool(finite):
                self._unguarded_apply(grads, trainable_variables)
            else:
                self._count_skip()
            return
        variables = [
            *(self._trainable_variables if trainable_variables is None else trainable_variables),
            *(v for v in self.variables if v is not self._skipped_steps),
        ]
        before = [v.value for v in variables]
        self._unguarded_apply(grads, trainable_variables)
        for variable, old in zip(variables, before, strict=True):
            variable.assign(ops.where(finite, variable.value, old))
        skipped = ops.cast(ops.logical_not(finite), self._skipped_steps.dtype)
        self._skipped_steps.assign(self._skipped_steps.value + skipped)

    def _cross_replica_guard(self, distribution: Any, grads: Any, trainable_variables: Any) -> None:
        import tensorflow as tf

        finite_per_replica = distribution.extended.call_for_each_replica(
            self._grads_finite, args=(grads,)
        )
        # Gradients are not yet all-reduced here: a step is finite only if every replica's is.
        finite = tf.reduce_all(
            tf.stack(distribution.experimental_local_results(finite_per_replica))
        )

        def apply_fn() -> None:
            distribution.extended.call_for_each_replica(
                self._unguarded_apply, args=(grads, trainable_variables)
            )

        ops.cond(finite, apply_fn, self._count_skip)

    def _grads_finite(self, grads: Sequence[Any]) -> Any:
        """A 0-d bool tensor: every gradient finite (None gradients are ignored)."""
        return all_finite([_read(g) for g in grads if g is not None], xp=_kernel_namespace())

    def _count_skip(self) -> None:
        self._skipped_steps.assign_add(ops.cast(1, self._skipped_steps.dtype))

    def _apply_weight_decay(self, variables: Any) -> None:
        # Keras's decoupled weight decay is done by the kernel inside update_step (in the
        # variable's dtype, one formula on every backend), not by the base class.
        return None

    def _backend_update_step(
        self, grads: Sequence[Any], trainable_variables: Sequence[Any], learning_rate: Any
    ) -> None:
        # Keras calls this after its own clipping, loss-scale and gradient-accumulation handling
        # and before EMA and the iteration count, as for its torch optimizers' multi-tensor step.
        if keras.backend.backend() == "torch" and self._torch_fused_update(
            grads, trainable_variables, learning_rate
        ):
            return
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def _torch_fused_update(
        self, grads: Sequence[Any], variables: Sequence[Any], learning_rate: Any
    ) -> bool:
        """All variables in one :func:`padam_core.fused_cpu.multi_tensor_step` call per weight
        decay setting, on zero-copy NumPy views of the torch CPU tensors. Returns False (nothing
        written) where that path cannot take them: no numba, a stateless scope, torch.compile,
        non-CPU or complex tensors, array hyperparameters; update_step then runs per variable.
        """
        rows = _torch_fused_rows(self, grads, variables)
        if rows is None:
            return False
        from padam_core import fused_cpu

        step = int(_read(self.iterations)) + 1
        lr = float(_read(learning_rate))
        for (weight_decay, decoupled), members in rows.items():
            columns = list(zip(*members, strict=True))
            param_arrays, grad_arrays, m_arrays, v_arrays = columns[:4]
            fused_cpu.multi_tensor_step(
                param_arrays,
                grad_arrays,
                m_arrays,
                v_arrays,
                columns[4] if self.amsgrad else None,
                step,
                lr=lr,
                b1=self.beta_1,
                b2=self.beta_2,
                eps=self.epsilon,
                partial=self._current_partial,
                weight_decay=weight_decay,
                decoupled_weight_decay=decoupled,
                amsgrad=self.amsgrad,
                maximize=self.maximize,
                variant=self.variant,
            )
        return True

    def _weight_decay_of(self, index: int) -> tuple[float, bool]:
        """(lambda, decoupled) for the variable at ``index``, honouring the exclusion lists."""
        # Map a backend/replica variable back to the Keras one for the exclusion lists.
        decays = self._use_weight_decay(self._trainable_variables[index])
        decoupled = decays and bool(self.weight_decay)
        weight_decay = self.weight_decay if decoupled else (self.l2_weight_decay if decays else 0.0)
        return weight_decay, decoupled

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One Padam step for one variable, computed by :func:`padam_core.padam_step`."""
        index = self._get_variable_index(variable)
        weight_decay, decoupled = self._weight_decay_of(index)
        momentum = self._momentums[index]
        velocity = self._velocities[index]
        velocity_hat = self._velocity_hats[index] if self.amsgrad else None

        # The arrays the kernel writes (param, m, v[, v_hat], its output order) and reads.
        state: tuple[Any, ...] = (_read(variable), _read(momentum), _read(velocity))
        if self.amsgrad:
            state += (_read(velocity_hat),)
        # t as a tensor: the kernel casts it to the compute dtype and takes expm1.
        inputs = (_read(gradient), _read(self.iterations + 1))
        lr = _read(learning_rate)

        def kernel(partial: Any, state: tuple[Any, ...], inputs: tuple[Any, ...]) -> Any:
            param, exp_avg, exp_avg_sq, *max_exp_avg_sq = state
            grad, step = inputs
            result = _padam_step(
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq[0] if self.amsgrad else None,
                step,
                lr=lr,
                b1=self.beta_1,
                b2=self.beta_2,
                eps=self.epsilon,
                partial=partial,
                weight_decay=weight_decay,
                decoupled_weight_decay=decoupled,
                amsgrad=self.amsgrad,
                maximize=self.maximize,
                variant=self.variant,
                xp=_kernel_namespace(),
                validate=False,  # validated in __init__; lr is a backend tensor here
            )
            return tuple(a for a in result if a is not None)

        partial = self._current_partial
        traced_number = self._partial
        if (
            not isinstance(partial, float)
            and isinstance(traced_number, float)
            and (traced_number == 0.0 or traced_number in SQRT_CHAIN_LENGTHS)
        ):
            # A number p read from its variable (TensorFlow/JAX): while it still equals the
            # value it had when this step was traced (the usual case), run the kernel with that
            # Python float, so the square-root chain (1/8: three sqrt, not pow) applies; after
            # an assignment, the other step computes with the variable's value (pow).
            outputs = _select_step(
                ops.equal(partial, traced_number),
                functools.partial(kernel, traced_number),
                functools.partial(kernel, _partial_for(partial, variable)),
                state,
                inputs,
            )
        else:
            outputs = kernel(_partial_for(partial, variable), state, inputs)
        result = StepResult(*outputs, *([None] if not self.amsgrad else []))
        self.assign(momentum, result.exp_avg)
        self.assign(velocity, result.exp_avg_sq)
        if self.amsgrad:
            self.assign(velocity_hat, result.max_exp_avg_sq)
        self.assign(variable, result.param)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Padam:
        # The base class replaces a serialized schedule in the dict it is given: copy it first.
        config = dict(config)
        if isinstance(config.get("partial"), dict):  # a padam_core.schedules config
            config["partial"] = schedules.from_config(config["partial"])
        return super().from_config(config, custom_objects=custom_objects)

    def get_config(self) -> dict[str, Any]:
        # A schedule: a nested dict that from_config rebuilds; a plain callable: ValueError.
        partial = schedules.saved_partial(self._partial, "Padam.get_config (a .keras file)")
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "partial": partial,
                "amsgrad": self.amsgrad,
                "variant": self.variant,
                "l2_weight_decay": self.l2_weight_decay,
                "maximize": self.maximize,
                "skip_nonfinite": self.skip_nonfinite,
            }
        )
        return config


def _exact_constant(value: float, shape: Any, dtype: Any = None) -> Any:
    """An initializer for ``value`` in ``dtype`` exactly (Keras's ``Constant`` goes through
    float32: 0.1 would become 0.10000000149 in a float64 variable)."""
    dtype = keras.backend.standardize_dtype(dtype)
    return ops.convert_to_tensor(np.full(shape, value, dtype=dtype), dtype=dtype)


def _partial_for(partial: Any, variable: Any) -> Any:
    """p for the kernel: a float as is; a tensor cast to the variable's real compute dtype
    (float32 for 16-bit floats; the kernel's pow takes both operands in one dtype)."""
    if isinstance(partial, float) or not hasattr(partial, "dtype"):
        return partial
    dtype = keras.backend.standardize_dtype(variable.dtype)
    dtype = "float64" if dtype in ("float64", "complex128") else "float32"
    return ops.cast(partial, dtype)


def _select_step(
    predicate: Any,
    specialised: Callable[[Any, Any], Any],
    general: Callable[[Any, Any], Any],
    state: tuple[Any, ...],
    inputs: tuple[Any, ...],
) -> Any:
    """``specialised(state, inputs)`` where the 0-d bool ``predicate`` holds, else ``general``.

    A concrete predicate (eager JAX) is read on the host; a traced one under JAX's ``jit`` goes
    through :func:`padam_keras._xla.select_step` (no copies of the donated state, unlike
    ``lax.cond``); other backends use ``ops.cond`` (TensorFlow runs only the branch taken)."""
    if keras.backend.backend() == "jax":
        import jax

        from padam_keras import _xla

        if not isinstance(predicate, jax.core.Tracer):
            return (specialised if bool(predicate) else general)(state, inputs)
        return _xla.select_step(predicate, specialised, general, state, inputs)
    return ops.cond(predicate, lambda: specialised(state, inputs), lambda: general(state, inputs))


def _check_loaded(variable: Any, value: Any, *, square: bool, count: bool) -> None:
    """``ValueError`` naming the variable if a saved value is one no Padam step can reach."""
    import numpy as np

    array = np.asarray(value)
    name = getattr(variable, "path", None) or getattr(variable, "name", "?")
    if array.shape != tuple(variable.shape):
        raise ValueError(
            f"Padam checkpoint: {name!r} has shape {array.shape}, expected {tuple(variable.shape)}"
        )
    if array.dtype.kind == "V" and array.dtype.fields is None:
        with contextlib.suppress(TypeError, ValueError):  # ml_dtypes' bfloat16 and friends
            array = array.astype(np.float32)
    if array.dtype.fields is not None or array.dtype.kind not in "iufc":
        raise ValueError(f"Padam checkpoint: {name!r} has dtype {array.dtype}")
    if count:
        if array.dtype.kind not in "iu" and not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"Padam checkpoint: {name!r} must be a whole number, got {array}")
        if np.any(array < 0):
            raise ValueError(f"Padam checkpoint: {name!r} is negative ({array})")
        return
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Padam checkpoint: {name!r} holds NaN or Inf")
    if square and np.any(np.real(array) < 0):
        raise ValueError(f"Padam checkpoint: {name!r} holds negative values (it is a square)")


def _torch_fused_rows(
    optimizer: Padam, grads: Sequence[Any], variables: Sequence[Any]
) -> dict[tuple[float, bool], list[list[Any]]] | None:
    """NumPy views (param, grad, m, v[, v_hat]) of every variable, grouped by weight decay, or
    None where the fused CPU path cannot take all of them (then nothing has been written)."""
    from padam_core import fused_cpu

    if not getattr(fused_cpu, "available", lambda: False)() or not hasattr(
        fused_cpu, "multi_tensor_step"
    ):
        return None
    hyperparameters = (
        optimizer.beta_1, optimizer.beta_2, optimizer.epsilon, optimizer._current_partial
    )  # fmt: skip
    if not all(isinstance(h, numbers.Real) for h in hyperparameters):
        return None
    import torch
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    if in_stateless_scope() or torch.compiler.is_compiling():
        return None
    rows: dict[tuple[float, bool], list[list[Any]]] = {}
    for gradient, variable in zip(grads, variables, strict=True):
        index = optimizer._get_variable_index(variable)
        slots = [optimizer._momentums[index], optimizer._velocities[index]]
        if optimizer.amsgrad:
            slots.append(optimizer._velocity_hats[index])
        tensors = [getattr(variable, "value", variable), gradient]
        tensors += [slot.value for slot in slots]
        if not all(
            isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_complex()
            for t in tensors
        ):
            return None
        tensors[1] = tensors[1].detach().contiguous()  # read only: a copy is harmless
        row = [_numpy_view(t) for t in tensors]
        if not fused_cpu.supports(*row):
            return None
        rows.setdefault(optimizer._weight_decay_of(index), []).append(row)
    return rows


def _numpy_view(tensor: Any) -> Any:
    """A zero-copy NumPy view of a torch CPU tensor (bfloat16 through ml_dtypes where it is
    installed; without it the int16 bits, which the fused path's ``supports`` declines)."""
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        bits = tensor.view(torch.int16).numpy()
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - ml_dtypes comes with jax and tensorflow
            return bits
        return bits.view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _static_shape(value: Any) -> tuple[int | None, ...]:
    shape = value.shape
    if hasattr(shape, "as_list"):  # tf.TensorShape
        shape = shape.as_list() if shape.rank is not None else [None]
    return tuple(None if d is None else int(d) for d in shape)


if Padam.__doc__ is not None:  # None under python -OO
    Padam.__doc__ = Padam.__doc__.replace(
        "{{base_optimizer_keyword_args}}",
        "name, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,\n"
        "            ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps: as\n"
        "            for every ``keras.optimizers.Optimizer`` (``weight_decay`` is decoupled).",
    )
