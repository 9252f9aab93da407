"""``padam compare --framework jax``: optax optimizers and a training loop in plain JAX.

The networks are written with ``jax.lax`` (no flax): ``mlp`` and ``cnn1d``, the same
architectures and the same initialization rule as the torch ones (uniform in +-1/sqrt(fan_in),
torch's default), with batch norm as torch's (batch statistics in training, running averages
with momentum 0.1 and the unbiased variance for evaluation, eps 1e-5). The CIFAR networks are
torch only for now.

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
from typing import Any, Final

import jax
import jax.numpy as jnp
import numpy as np
import optax

from padam_compare.config import CompareConfig, ConfigError, OptimizerRun
from padam_compare.data import Dataset
from padam_compare.errors import SetupError
from padam_compare.results import EpochRecord, RunResult

__all__ = ["JAX_MODELS", "JAX_OPTIMIZERS", "JaxBackend", "make_transformation"]

Params = dict[str, Any]
Schedule = Callable[[jax.Array], jax.Array]
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


def _uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """torch's default layer initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _linear(key: jax.Array, fan_in: int, fan_out: int) -> Params:
    weight_key, bias_key = jax.random.split(key)
    return {
        "w": _uniform(weight_key, (fan_in, fan_out), fan_in),
        "b": _uniform(bias_key, (fan_out,), fan_in),
    }


def _batch_norm(
    x: jax.Array, params: Params, state: Params, train: bool, axes: tuple[int, ...]
) -> tuple[jax.Array, Params]:
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if train:
        mean = x.mean(axis=axes)
        variance = x.var(axis=axes)
        count = x.size // x.shape[1]
        unbiased = variance * count / max(count - 1, 1)
        state = {
            "mean": (1 - _BN_MOMENTUM) * state["mean"] + _BN_MOMENTUM * mean,
            "var": (1 - _BN_MOMENTUM) * state["var"] + _BN_MOMENTUM * unbiased,
        }
    else:
        mean, variance = state["mean"], state["var"]
    normalized = (x - mean.reshape(shape)) / jnp.sqrt(variance.reshape(shape) + _BN_EPS)
    return normalized * params["scale"].reshape(shape) + params["bias"].reshape(shape), state


def _init_mlp(
    key: jax.Array, input_shape: tuple[int, ...], num_classes: int, hidden: int = 128
) -> tuple[Params, Params]:
    keys = jax.random.split(key, 3)
    sizes = (math.prod(input_shape), hidden, hidden, num_classes)
    params = {f"dense{i}": _linear(keys[i], sizes[i], sizes[i + 1]) for i in range(3)}
    return params, {}


def _apply_mlp(
    params: Params, state: Params, x: jax.Array, train: bool
) -> tuple[jax.Array, Params]:
    h = x.reshape(x.shape[0], -1)
    for i in range(3):
        h = h @ params[f"dense{i}"]["w"] + params[f"dense{i}"]["b"]
        if i < 2:
            h = jax.nn.relu(h)
    return h, state


_CNN1D_LAYERS: Final = ((5, 1, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)


def _init_cnn1d(
    key: jax.Array, input_shape: tuple[int, ...], num_classes: int, channels: int = 32
) -> tuple[Params, Params]:
    if len(input_shape) != 1:
        raise ConfigError(f"cnn1d takes 1-D signals, got examples of shape {input_shape}")
    keys = jax.random.split(key, len(_CNN1D_LAYERS) + 1)
    params: Params = {}
    state: Params = {}
    in_channels = 1
    for index, (kernel, _, _) in enumerate(_CNN1D_LAYERS):
        fan_in = in_channels * kernel
        params[f"conv{index}"] = _uniform(keys[index], (channels, in_channels, kernel), fan_in)
        params[f"bn{index}"] = {
            "scale": jnp.ones(channels, jnp.float32),
            "bias": jnp.zeros(channels, jnp.float32),
        }
        state[f"bn{index}"] = {
            "mean": jnp.zeros(channels, jnp.float32),
            "var": jnp.ones(channels, jnp.float32),
        }
        in_channels = channels
    reduced = (input_shape[0] + 3) // 4
    params["dense"] = _linear(keys[-1], channels * reduced, num_classes)
    return params, state


def _apply_cnn1d(
    params: Params, state: Params, x: jax.Array, train: bool
) -> tuple[jax.Array, Params]:
    h = x[:, None, :]
    new_state = {}
    for index, (_, stride, padding) in enumerate(_CNN1D_LAYERS):
        h = jax.lax.conv_general_dilated(
            h,
            params[f"conv{index}"],
            (stride,),
            [(padding, padding)],
            dimension_numbers=("NCH", "OIH", "NCH"),
        )
        h, new_state[f"bn{index}"] = _batch_norm(
            h, params[f"bn{index}"], state[f"bn{index}"], train, axes=(0, 2)
        )
        h = jax.nn.relu(h)
    h = h.reshape(h.shape[0], -1)
    return h @ params["dense"]["w"] + params["dense"]["b"], new_state


#: Model name -> (init(key, input_shape, classes) -> (params, state), apply).
JAX_MODELS: Final = {
    "mlp": (_init_mlp, _apply_mlp),
    "cnn1d": (_init_cnn1d, _apply_cnn1d),
}


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
        self.init_model, self.apply_model = JAX_MODELS[config.model]
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
            apply_model = self.apply_model

            def step(params, state, opt_state, x, y):
                def loss_fn(p):
                    logits, new_state = apply_model(p, state, x, True)
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
        logits, _ = self.apply_model(params, state, x, False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return losses.sum(), (logits.argmax(axis=1) == y).sum()

    def train(
        self, run: OptimizerRun, seed: int, on_epoch: Callable[[EpochRecord], None] | None = None
    ) -> RunResult:
        """Train a fresh model from ``seed`` (initial weights and data order)."""
        config = self.config
        transformation, step = self._step_function(run)
        params, state = self.init_model(
            jax.random.PRNGKey(seed), self.dataset.input_shape, self.dataset.num_classes
        )
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
