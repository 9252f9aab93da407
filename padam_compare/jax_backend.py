"""``padam compare --framework jax``: optax optimizers, flax (linen) networks, a jitted loop.

The networks ``mlp`` and ``cnn1d`` are flax linen modules with the torch ones' architecture and
initialization rule (uniform in +-1/sqrt(fan_in), torch's default, for weights and biases) and
torch's batch-norm conventions (batch statistics in training, running averages with torch's
momentum 0.1, eps 1e-5; the running variance is flax's biased one, see ``CNN1d``). linen rather
than NNX: the loop is functional, a jitted pure step over (params, batch_stats, optimizer
state), one per optimizer reused across seeds, which linen's ``init``/``apply`` with a
``batch_stats`` collection is; NNX's stateful modules would need ``nnx.split``/``merge`` or
``nnx.jit`` around that same step. The CIFAR networks are torch only for now.

Optimizers, matched to the torch baselines: coupled L2 weight decay is
``optax.add_decayed_weights`` before the optimizer (torch's ``weight_decay`` adds lambda*theta
to the gradient the same way); ``sgd`` is ``optax.sgd`` with momentum (torch's heavy-ball
form); ``adamw`` is ``optax.adamw`` (decoupled, scaled by the learning rate, as torch);
``amsgrad`` is ``optax.amsgrad``, whose running max is over the *bias-corrected* v (torch's over
the raw v: see docs/numerics.md, "optax-style"); Padam is ``padam_jax.padam``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final, cast

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.typing import ArrayLike

from padam_compare.config import CompareConfig, ConfigError, OptimizerRun
from padam_compare.data import Dataset
from padam_compare.errors import SetupError
from padam_compare.results import EpochRecord, RunResult

__all__ = [
    "JAX_MODELS",
    "JAX_OPTIMIZERS",
    "JaxBackend",
    "apply_model",
    "init_model",
    "make_transformation",
]

Params = dict[str, Any]
Schedule = Callable[[ArrayLike], jax.Array]  # step (a Python int, or traced) -> lr
_BN_EPS: Final = 1e-5
_BN_MOMENTUM: Final = 0.1


# --------------------------------------------------------------------------- optimizers


def _coupled_l2(
    options: dict[str, Any], transformation: optax.GradientTransformation
) -> optax.GradientTransformation:
    if options["weight_decay"] == 0:
        return transformation
    return optax.chain(optax.add_decayed_weights(options["weight_decay"]), transformation)


def _sgd(options: dict[str, Any], schedule: Schedule) -> optax.GradientTransformation:
    momentum = options["momentum"] or None
    return _coupled_l2(
        options, optax.sgd(schedule, momentum=momentum, nesterov=options["nesterov"])
    )


def _adam(options: dict[str, Any], schedule: Schedule) -> optax.GradientTransformation:
    b1, b2 = options["betas"]
    return _coupled_l2(options, optax.adam(schedule, b1=b1, b2=b2, eps=options["eps"]))


def _amsgrad(options: dict[str, Any], schedule: Schedule) -> optax.GradientTransformation:
    b1, b2 = options["betas"]
    return _coupled_l2(options, optax.amsgrad(schedule, b1=b1, b2=b2, eps=options["eps"]))


def _adamw(options: dict[str, Any], schedule: Schedule) -> optax.GradientTransformation:
    b1, b2 = options["betas"]
    return optax.adamw(
        schedule, b1=b1, b2=b2, eps=options["eps"], weight_decay=options["weight_decay"]
    )


def _padam(options: dict[str, Any], schedule: Schedule) -> optax.GradientTransformation:
    try:
        from padam_jax import padam
    except ImportError as error:  # pragma: no cover - depends on the installed package
        raise SetupError(f"Padam for JAX is not available ({error}); install padam[jax]") from error
    b1, b2 = options["betas"]
    return padam(
        schedule,
        b1=b1,
        b2=b2,
        eps=options["eps"],
        partial=options["partial"],
        weight_decay=options["weight_decay"],
        amsgrad=options["amsgrad"],
        variant=options["variant"],
    )


#: Optimizer family -> constructor taking (resolved options, learning-rate schedule).
JAX_OPTIMIZERS: Final[
    dict[str, Callable[[dict[str, Any], Schedule], optax.GradientTransformation]]
] = {
    "sgd": _sgd,
    "adam": _adam,
    "amsgrad": _amsgrad,
    "adamw": _adamw,
    "padam": _padam,
}


def make_transformation(run: OptimizerRun, schedule: Schedule) -> optax.GradientTransformation:
    """The optax transformation of ``run`` with learning rate ``schedule``."""
    return JAX_OPTIMIZERS[run.family](run.options, schedule)


# --------------------------------------------------------------------------- networks


def _torch_uniform(fan_in: int) -> Callable[..., jax.Array]:
    """torch's default layer initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights
    and biases alike (flax's defaults are lecun-normal weights and zero biases; the bias needs
    the layer's fan-in, which a flax initializer is not given, hence one closure)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _dense(features: int, fan_in: int, name: str) -> nn.Dense:
    init = _torch_uniform(fan_in)
    return nn.Dense(features, kernel_init=init, bias_init=init, name=name)


class MLP(nn.Module):
    """Flatten, then two hidden ReLU layers of ``hidden`` units (torch_models.MLP)."""

    num_classes: int
    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        fan_in = h.shape[1]
        for index in range(2):
            h = nn.relu(_dense(self.hidden, fan_in, f"dense{index}")(h))
            fan_in = self.hidden
        return _dense(self.num_classes, fan_in, "dense2")(h)


_CNN1D_LAYERS: Final = ((5, 1, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)


class CNN1d(nn.Module):
    """Three 1-D convolutions without bias, each followed by batch norm and ReLU, and a linear
    classifier (torch_models.CNN1d). Channels last, as flax's convolutions are; the features are
    flattened channels first, as torch's, so the classifier sees torch's layout."""

    num_classes: int
    channels: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = x[:, :, None]  # (batch, length, 1 channel)
        for index, (kernel, stride, padding) in enumerate(_CNN1D_LAYERS):
            h = nn.Conv(
                self.channels,
                (kernel,),
                strides=(stride,),
                padding=[(padding, padding)],
                use_bias=False,
                kernel_init=_torch_uniform(h.shape[-1] * kernel),
                name=f"conv{index}",
            )(h)
            # torch's conventions: flax's momentum 0.9 is torch's 0.1 (the weight of the old
            # running average), eps 1e-5, the two-pass variance. One difference left: flax (like
            # Keras) averages the biased batch variance into the running variance, torch the
            # unbiased one; a factor n/(n-1), n = batch x length >= 1280 at the defaults, and
            # it reaches evaluation only.
            h = nn.BatchNorm(
                use_running_average=not train,
                momentum=1 - _BN_MOMENTUM,
                epsilon=_BN_EPS,
                use_fast_variance=False,
                name=f"bn{index}",
            )(h)
            h = nn.relu(h)
        h = h.transpose(0, 2, 1).reshape(h.shape[0], -1)
        return _dense(self.num_classes, h.shape[1], "dense")(h)


def _cnn1d(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 1:
        raise ConfigError(f"cnn1d takes 1-D signals, got examples of shape {input_shape}")
    return CNN1d(num_classes)


#: Model name -> builder(input_shape of one example, classes) of its flax (linen) module.
JAX_MODELS: Final[dict[str, Callable[[tuple[int, ...], int], nn.Module]]] = {
    "mlp": lambda input_shape, num_classes: MLP(num_classes),
    "cnn1d": _cnn1d,
}


def init_model(
    model: nn.Module, key: jax.Array, input_shape: tuple[int, ...]
) -> tuple[Params, Params]:
    """(params, state) of ``model`` drawn from ``key``; state holds the mutable collections
    (``batch_stats``: the running averages of batch norm), empty for the mlp."""
    variables = dict(model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False))
    params = variables.pop("params")
    return params, variables


def apply_model(
    model: nn.Module, params: Params, state: Params, x: jax.Array, train: bool
) -> tuple[jax.Array, Params]:
    """Logits, and the state after the batch (updated running averages when training)."""
    # linen's apply returns the output, or with mutable= (output, the updated collections); its
    # annotation is the union of both.
    if not train:
        return cast(jax.Array, model.apply({"params": params, **state}, x, train=False)), state
    logits, new_state = cast(
        tuple[jax.Array, Params],
        model.apply({"params": params, **state}, x, train=True, mutable=list(state)),
    )
    return logits, dict(new_state)


# --------------------------------------------------------------------------- training


class JaxBackend:
    """Trains one (optimizer, seed) run with JAX and optax."""

    name = "jax"

    def __init__(self, config: CompareConfig, dataset: Dataset) -> None:
        if config.model not in JAX_MODELS:
            raise ConfigError(
                f"--framework jax has the models {', '.join(JAX_MODELS)}; "
                f"{config.model} is torch only for now (use --framework torch)"
            )
        if dataset.is_image and config.augment is not False:
            raise ConfigError("--framework jax has no image augmentation yet: add --no-augment")
        if config.device.startswith("cuda"):
            try:
                jax.devices("gpu")
            except RuntimeError:
                raise SetupError(
                    f"device {config.device!r} asked for, but JAX sees no GPU"
                ) from None
        self.config = config
        self.dataset = dataset
        self.model = JAX_MODELS[config.model](dataset.input_shape, dataset.num_classes)
        self.x_train = self.dataset.standardize(dataset.x_train)
        self.x_test = jnp.asarray(self.dataset.standardize(dataset.x_test))
        self.y_test = jnp.asarray(dataset.y_test.astype(np.int32))
        self.steps_per_epoch = math.ceil(len(dataset.y_train) / config.batch_size)
        self._steps: dict[str, tuple[optax.GradientTransformation, Callable[..., Any]]] = {}
        self._evaluate = jax.jit(self._evaluate_batch)

    def describe(self) -> dict[str, Any]:
        """Versions and device, for results.json."""
        return {
            "framework": "jax",
            "jax_version": jax.__version__,
            "optax_version": optax.__version__,
            "flax_version": flax.__version__,
            "device": str(jax.devices()[0]),
            "threads": "XLA default",
        }

    def schedule(self) -> Schedule:
        """The learning-rate factor per step: x lr_decay after each milestone epoch."""
        boundaries = {
            milestone * self.steps_per_epoch: self.config.lr_decay
            for milestone in self.config.resolved_milestones()
        }
        return optax.piecewise_constant_schedule(1.0, boundaries)

    def check(self, runs: list[OptimizerRun]) -> None:
        """Build each transformation once so a bad value shows before training."""
        dummy = {"w": jnp.zeros(1, jnp.float32)}
        for run in runs:
            try:
                make_transformation(run, self._scaled(run)).init(dummy)
            except (ValueError, TypeError) as error:
                raise SetupError(f"{run.label}: {error}") from error

    def _scaled(self, run: OptimizerRun) -> Schedule:
        factor = self.schedule()
        lr = float(run.options["lr"])
        return lambda step: lr * factor(step)

    def _step_function(
        self, run: OptimizerRun
    ) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
        """One jitted training step per optimizer (reused across seeds)."""
        if run.label not in self._steps:
            transformation = make_transformation(run, self._scaled(run))
            model = self.model

            def step(params, state, opt_state, x, y):
                def loss_fn(p):
                    logits, new_state = apply_model(model, p, state, x, True)
                    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                    return loss, (logits, new_state)

                (loss, (logits, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    params
                )
                updates, opt_state = transformation.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                correct = (logits.argmax(axis=1) == y).sum()
                return params, new_state, opt_state, loss, correct

            self._steps[run.label] = (transformation, jax.jit(step))
        return self._steps[run.label]

    def _evaluate_batch(self, params, state, x, y):
        logits, _ = apply_model(self.model, params, state, x, False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return losses.sum(), (logits.argmax(axis=1) == y).sum()

    def train(
        self, run: OptimizerRun, seed: int, on_epoch: Callable[[EpochRecord], None] | None = None
    ) -> RunResult:
        """Train a fresh model from ``seed`` (initial weights and data order)."""
        config = self.config
        transformation, step = self._step_function(run)
        params, state = init_model(self.model, jax.random.PRNGKey(seed), self.dataset.input_shape)
        opt_state = transformation.init(params)
        order_rng = np.random.default_rng(seed)
        learning_rate = self._scaled(run)
        result = RunResult(label=run.label, family=run.family, seed=seed, options=dict(run.options))
        total = len(self.dataset.y_train)
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            lr = float(learning_rate((epoch - 1) * self.steps_per_epoch))
            order = order_rng.permutation(total)
            loss_sum = jnp.zeros((), jnp.float32)
            correct = jnp.zeros((), jnp.int32)
            for start in range(0, total, config.batch_size):
                index = order[start : start + config.batch_size]
                x = jnp.asarray(self.x_train[index])
                y = jnp.asarray(self.dataset.y_train[index].astype(np.int32))
                params, state, opt_state, loss, batch_correct = step(params, state, opt_state, x, y)
                loss_sum = loss_sum + loss * len(index)
                correct = correct + batch_correct
            train_loss = float(loss_sum) / total
            test_loss_sum, test_correct = 0.0, 0
            for start in range(0, len(self.y_test), 1000):
                batch_loss, batch_correct = self._evaluate(
                    params,
                    state,
                    self.x_test[start : start + 1000],
                    self.y_test[start : start + 1000],
                )
                test_loss_sum += float(batch_loss)
                test_correct += int(batch_correct)
            record = EpochRecord(
                epoch=epoch,
                lr=lr,
                train_loss=train_loss,
                train_accuracy=int(correct) / total,
                test_loss=test_loss_sum / len(self.y_test),
                test_accuracy=test_correct / len(self.y_test),
                seconds=time.perf_counter() - started,
            )
            result.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if not math.isfinite(train_loss):
                result.diverged_at = epoch
                break
        return result
