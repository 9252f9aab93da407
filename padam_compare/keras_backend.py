"""``padam compare --framework keras``: Keras 3 optimizers and ``model.fit``, on whichever
Keras backend ``KERAS_BACKEND`` selects (TensorFlow by default).

The ``mlp`` and ``cnn1d`` networks are the torch ones rebuilt from Keras layers (channels last;
explicit zero padding so the strided convolutions pad like torch's), with torch's
initialization rule (uniform in +-1/sqrt(fan_in)) and batch-norm conventions (momentum 0.1 in
torch's sense, eps 1e-5). The CIFAR networks are torch only for now.

Weight decay as in the torch comparison: coupled L2 (lambda*theta added to the gradient) for
SGD, Adam, AMSGrad, through L2 regularizers on every weight (``L2(lambda / 2)``: its gradient
is lambda*theta), and through Padam's own ``l2_weight_decay``; decoupled for AdamW
(``keras.optimizers.AdamW``). The table's training loss is the cross-entropy alone (a metric),
without the regularization term Keras adds to its ``loss``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

import keras

from padam_compare.config import CompareConfig, ConfigError, OptimizerRun
from padam_compare.data import Dataset
from padam_compare.errors import SetupError
from padam_compare.results import EpochRecord, RunResult

__all__ = ["KERAS_OPTIMIZERS", "KerasBackend", "make_optimizer"]


def _sgd(options: dict[str, Any]) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        options["lr"], momentum=options["momentum"], nesterov=options["nesterov"]
    )


def _adam(options: dict[str, Any], amsgrad: bool = False) -> keras.optimizers.Optimizer:
    b1, b2 = options["betas"]
    return keras.optimizers.Adam(
        options["lr"], beta_1=b1, beta_2=b2, epsilon=options["eps"], amsgrad=amsgrad
    )


def _adamw(options: dict[str, Any]) -> keras.optimizers.Optimizer:
    b1, b2 = options["betas"]
    return keras.optimizers.AdamW(
        options["lr"],
        weight_decay=options["weight_decay"],
        beta_1=b1,
        beta_2=b2,
        epsilon=options["eps"],
    )


def _padam(options: dict[str, Any]) -> keras.optimizers.Optimizer:
    try:
        from padam_keras import Padam
    except ImportError as error:  # pragma: no cover - depends on the installed package
        raise SetupError(
            f"Padam for Keras is not available ({error}); install padam[keras]"
        ) from error
    b1, b2 = options["betas"]
    return Padam(
        options["lr"],
        beta_1=b1,
        beta_2=b2,
        epsilon=options["eps"],
        partial=options["partial"],
        amsgrad=options["amsgrad"],
        variant=options["variant"],
        l2_weight_decay=options["weight_decay"],
    )


#: Optimizer family -> constructor taking the resolved options.
KERAS_OPTIMIZERS: Final[dict[str, Callable[[dict[str, Any]], keras.optimizers.Optimizer]]] = {
    "sgd": _sgd,
    "adam": _adam,
    "amsgrad": lambda options: _adam(options, amsgrad=True),
    "adamw": _adamw,
    "padam": _padam,
}

#: Families whose coupled L2 comes from layer regularizers (Padam has its own argument).
_L2_BY_REGULARIZER: Final = ("sgd", "adam", "amsgrad")


def make_optimizer(run: OptimizerRun) -> keras.optimizers.Optimizer:
    """The Keras optimizer of ``run``."""
    return KERAS_OPTIMIZERS[run.family](run.options)


def _torch_like_dense(
    units: int, fan_in: int, l2: float, activation: str | None = None
) -> keras.layers.Layer:
    bound = 1.0 / math.sqrt(fan_in)
    regularizer = keras.regularizers.L2(l2 / 2) if l2 else None
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        kernel_regularizer=regularizer,
        bias_regularizer=regularizer,
    )


def _build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, l2: float
) -> keras.Model:
    regularizer = keras.regularizers.L2(l2 / 2) if l2 else None
    layers: list[keras.layers.Layer] = [keras.Input(input_shape)]
    if name == "mlp":
        fan_in = math.prod(input_shape)
        layers += [
            keras.layers.Flatten(),
            _torch_like_dense(128, fan_in, l2, "relu"),
            _torch_like_dense(128, 128, l2, "relu"),
            _torch_like_dense(num_classes, 128, l2),
        ]
    elif name == "cnn1d":
        if len(input_shape) != 1:
            raise ConfigError(f"cnn1d takes 1-D signals, got examples of shape {input_shape}")
        channels = 32
        layers.append(keras.layers.Reshape((input_shape[0], 1)))
        in_channels = 1
        for kernel, stride, padding in ((5, 1, 2), (3, 2, 1), (3, 2, 1)):
            bound = 1.0 / math.sqrt(in_channels * kernel)
            layers += [
                keras.layers.ZeroPadding1D(padding),
                keras.layers.Conv1D(
                    channels,
                    kernel,
                    strides=stride,
                    use_bias=False,
                    kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
                    kernel_regularizer=regularizer,
                ),
                keras.layers.BatchNormalization(
                    momentum=0.9,
                    epsilon=1e-5,
                    gamma_regularizer=regularizer,
                    beta_regularizer=regularizer,
                ),
                keras.layers.ReLU(),
            ]
            in_channels = channels
        # Flatten channels-first, as torch does, so the classifier sees the same layout.
        layers += [
            keras.layers.Permute((2, 1)),
            keras.layers.Flatten(),
            _torch_like_dense(num_classes, channels * ((input_shape[0] + 3) // 4), l2),
        ]
    else:
        raise ConfigError(
            f"--framework keras has the models mlp, cnn1d; {name} is torch only "
            "for now (use --framework torch)"
        )
    return keras.Sequential(layers)


class _Recorder(keras.callbacks.Callback):
    """Sets the epoch's learning rate, times the epoch, turns Keras's logs into records."""

    def __init__(
        self,
        learning_rate: Callable[[int], float],
        total_epochs: int,
        on_epoch: Callable[[EpochRecord], None] | None,
    ) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self.on_epoch = on_epoch
        self.records: list[EpochRecord] = []
        self.started = 0.0
        self.total_epochs = total_epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()
        self.model.optimizer.learning_rate = self.learning_rate(epoch + 1)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        record = EpochRecord(
            epoch=epoch + 1,
            lr=self.learning_rate(epoch + 1),
            train_loss=float(logs["cross_entropy"]),
            train_accuracy=float(logs["accuracy"]),
            test_loss=float(logs["val_cross_entropy"]),
            test_accuracy=float(logs["val_accuracy"]),
            seconds=time.perf_counter() - self.started,
        )
        self.records.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)
        if not math.isfinite(record.train_loss):
            self.model.stop_training = True


class KerasBackend:
    """Trains one (optimizer, seed) run with Keras 3 ``fit``."""

    name = "keras"

    def __init__(self, config: CompareConfig, dataset: Dataset) -> None:
        if config.model not in ("mlp", "cnn1d"):
            raise ConfigError(
                f"--framework keras has the models mlp, cnn1d; {config.model} is "
                "torch only for now (use --framework torch)"
            )
        if dataset.is_image and config.augment is not False:
            raise ConfigError("--framework keras has no image augmentation yet: add --no-augment")
        self.config = config
        self.dataset = dataset
        self.x_train = self.dataset.standardize(dataset.x_train)
        self.x_test = self.dataset.standardize(dataset.x_test)

    def describe(self) -> dict[str, Any]:
        """Versions and backend, for results.json."""
        return {
            "framework": "keras",
            "keras_version": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "device": "keras default",
            "threads": "backend default",
        }

    def check(self, runs: list[OptimizerRun]) -> None:
        """Build each optimizer once so a bad value shows before training."""
        for run in runs:
            try:
                make_optimizer(run)
            except (ValueError, TypeError) as error:
                raise SetupError(f"{run.label}: {error}") from error

    def _learning_rate(self, run: OptimizerRun) -> Callable[[int], float]:
        milestones = self.config.resolved_milestones()
        lr, decay = float(run.options["lr"]), self.config.lr_decay

        def at_epoch(epoch: int) -> float:
            return lr * decay ** sum(epoch > milestone for milestone in milestones)

        return at_epoch

    def train(
        self, run: OptimizerRun, seed: int, on_epoch: Callable[[EpochRecord], None] | None = None
    ) -> RunResult:
        """Train a fresh model from ``seed`` (initial weights and data order)."""
        keras.utils.set_random_seed(seed)
        l2 = float(run.options["weight_decay"]) if run.family in _L2_BY_REGULARIZER else 0.0
        model = _build_model(
            self.config.model, self.dataset.input_shape, self.dataset.num_classes, l2
        )
        model.compile(
            optimizer=make_optimizer(run),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[
                keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="cross_entropy"),
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            ],
        )
        recorder = _Recorder(self._learning_rate(run), self.config.epochs, on_epoch)
        model.fit(
            self.x_train,
            self.dataset.y_train,
            batch_size=self.config.batch_size,
            epochs=self.config.epochs,
            shuffle=True,
            verbose=0,
            validation_data=(self.x_test, self.dataset.y_test),
            validation_batch_size=1000,
            callbacks=[recorder],
        )
        result = RunResult(
            label=run.label,
            family=run.family,
            seed=seed,
            options=dict(run.options),
            epochs=recorder.records,
        )
        if recorder.records and not math.isfinite(recorder.records[-1].train_loss):
            result.diverged_at = recorder.records[-1].epoch
        return result
