"""``padam compare --framework torch``: the optimizer registry and the training loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from padam_compare.config import CompareConfig, OptimizerRun
from padam_compare.data import Dataset
from padam_compare.errors import SetupError
from padam_compare.results import EpochRecord, RunResult
from padam_compare.torch_models import build_model

__all__ = ["TORCH_OPTIMIZERS", "TorchBackend", "make_optimizer"]

OptimizerFactory = Callable[[Iterable[nn.Parameter], dict[str, Any]], torch.optim.Optimizer]


def _sgd(params: Iterable[nn.Parameter], options: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=options["lr"],
        momentum=options["momentum"],
        nesterov=options["nesterov"],
        weight_decay=options["weight_decay"],
    )


def _adam(
    params: Iterable[nn.Parameter], options: dict[str, Any], amsgrad: bool = False
) -> torch.optim.Optimizer:
    # Coupled L2 (weight decay added to the gradient), as the paper's Adam/AMSGrad baselines.
    return torch.optim.Adam(
        params,
        lr=options["lr"],
        betas=options["betas"],
        eps=options["eps"],
        weight_decay=options["weight_decay"],
        amsgrad=amsgrad,
    )


def _adamw(params: Iterable[nn.Parameter], options: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params,
        lr=options["lr"],
        betas=options["betas"],
        eps=options["eps"],
        weight_decay=options["weight_decay"],
    )


def _padam(params: Iterable[nn.Parameter], options: dict[str, Any]) -> torch.optim.Optimizer:
    try:
        from padam_torch import Padam
    except ImportError as error:  # pragma: no cover - depends on the installed package
        raise SetupError(
            f"Padam for torch is not available ({error}); install padam with the torch extra "
            "(pip install 'padam[torch,compare]')"
        ) from error
    return Padam(
        params,
        lr=options["lr"],
        betas=options["betas"],
        eps=options["eps"],
        weight_decay=options["weight_decay"],
        partial=options["partial"],
        amsgrad=options["amsgrad"],
        variant=options["variant"],
    )


#: Optimizer family -> constructor taking (parameters, resolved options).
TORCH_OPTIMIZERS: Final[dict[str, OptimizerFactory]] = {
    "sgd": _sgd,
    "adam": _adam,
    "amsgrad": lambda params, options: _adam(params, options, amsgrad=True),
    "adamw": _adamw,
    "padam": _padam,
}


def make_optimizer(run: OptimizerRun, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer of ``run`` over ``params``."""
    return TORCH_OPTIMIZERS[run.family](params, run.options)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(f"device {name!r} asked for, but torch sees no CUDA device")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise SetupError(f"invalid device {name!r}: {error}") from None


class _Batches:
    """The dataset as tensors on the device, and the per-batch preprocessing.

    A batch is converted to float32 and standardized; CIFAR-style images are augmented (when
    asked) with the usual recipe: zero-pad 4 pixels, take a random 32x32 crop, flip
    horizontally with probability 1/2, all drawn from the run's seeded generator.
    """

    def __init__(self, dataset: Dataset, device: torch.device, augment: bool) -> None:
        self.device = device
        self.x_train = torch.from_numpy(np.ascontiguousarray(dataset.x_train)).to(device)
        self.y_train = torch.from_numpy(dataset.y_train).to(device)
        self.x_test = torch.from_numpy(np.ascontiguousarray(dataset.x_test)).to(device)
        self.y_test = torch.from_numpy(dataset.y_test).to(device)
        self.scale = dataset.scale
        self.mean = None if dataset.mean is None else torch.from_numpy(dataset.mean).to(device)
        self.std = None if dataset.std is None else torch.from_numpy(dataset.std).to(device)
        self.augment = augment and dataset.is_image

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.scale != 1.0:
            x = x / self.scale
        if self.augment and generator is not None:
            x = self._crop_and_flip(x, generator)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x

    def _crop_and_flip(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, _, height, width = x.shape
        padding = 4
        padded = nn.functional.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(self.device)
        left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(self.device)
        flip = (torch.rand(batch, generator=generator) < 0.5).to(self.device)
        rows = top[:, None] + torch.arange(height, device=self.device)  # (batch, height)
        columns = left[:, None] + torch.arange(width, device=self.device)  # (batch, width)
        # Flipping = reading the crop's columns right to left.
        columns = torch.where(flip[:, None], columns.flip(1), columns)
        index = torch.arange(batch, device=self.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=self.device)[None, :, None, None]
        return padded[index, channel, rows[:, None, :, None], columns[:, None, None, :]]


class TorchBackend:
    """Trains one (optimizer, seed) run with PyTorch."""

    name = "torch"

    def __init__(self, config: CompareConfig, dataset: Dataset) -> None:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.config = config
        self.dataset = dataset
        self.device = _resolve_device(config.device)
        if self.device.type == "cuda":
            # Fixed input shapes: let cuDNN pick its fastest convolution algorithms (the CIFAR
            # presets are days of CPU time, hours of GPU time; the picks are not bitwise
            # reproducible from run to run, which seeds do not promise on a GPU anyway).
            torch.backends.cudnn.benchmark = True
        augment = config.augment if config.augment is not None else dataset.is_image
        self.batches = _Batches(dataset, self.device, augment)

    def describe(self) -> dict[str, Any]:
        """Versions and device, for results.json."""
        return {
            "framework": "torch",
            "torch_version": torch.__version__,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }

    def check(self, runs: list[OptimizerRun]) -> None:
        """Build each optimizer on a dummy parameter: a missing package or a value the
        optimizer rejects shows up before any training."""
        for run in runs:
            try:
                make_optimizer(run, [nn.Parameter(torch.zeros(1))])
            except (ValueError, TypeError) as error:
                raise SetupError(f"{run.label}: {error}") from error

    @torch.no_grad()
    def _evaluate(self, model: nn.Module) -> tuple[float, float]:
        model.eval()
        loss_sum, correct = 0.0, 0
        total = len(self.batches.y_test)
        step = max(self.config.batch_size, 1000)
        for start in range(0, total, step):
            x = self.batches.prepare(self.batches.x_test[start : start + step], None)
            y = self.batches.y_test[start : start + step]
            logits = model(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum / total, correct / total

    def train(
        self,
        run: OptimizerRun,
        seed: int,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> RunResult:
        """Train a fresh model from ``seed`` with the optimizer of ``run``.

        The seed fixes the initial weights, the data order and the augmentation, so every
        optimizer starts from the same weights and sees the same batches for a given seed.
        """
        config = self.config
        torch.manual_seed(seed)
        model = build_model(config.model, self.dataset.input_shape, self.dataset.num_classes)
        model.to(self.device)
        optimizer = make_optimizer(run, model.parameters())
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=config.resolved_milestones(), gamma=config.lr_decay
        )
        generator = torch.Generator().manual_seed(seed)
        result = RunResult(label=run.label, family=run.family, seed=seed, options=dict(run.options))
        total = len(self.batches.y_train)
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            model.train()
            order = torch.randperm(total, generator=generator).to(self.device)
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            for start in range(0, total, config.batch_size):
                index = order[start : start + config.batch_size]
                x = self.batches.prepare(self.batches.x_train[index], generator)
                y = self.batches.y_train[index]
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Accumulate on the device: no synchronization per step on a GPU.
                loss_sum += loss.detach() * len(index)
                correct += (logits.detach().argmax(1) == y).sum()
            scheduler.step()
            train_loss = float(loss_sum) / total
            test_loss, test_accuracy = self._evaluate(model)
            record = EpochRecord(
                epoch=epoch,
                lr=lr,
                train_loss=train_loss,
                train_accuracy=int(correct) / total,
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                seconds=time.perf_counter() - started,
            )
            result.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if not math.isfinite(train_loss):
                result.diverged_at = epoch
                break
        return result
