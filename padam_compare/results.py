"""What one training run records, and the summary over seeds (framework-free)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["EpochRecord", "RunResult", "Statistic", "Summary", "summarize"]


@dataclass
class EpochRecord:
    """One epoch of one run.

    ``train_loss``/``train_accuracy`` are the means over the epoch's minibatches (the model
    changes during the epoch, as in the paper's curves); ``test_*`` are measured on the whole
    test set after the epoch, in evaluation mode. ``lr`` is the learning rate used in the epoch.
    """

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class RunResult:
    """One optimizer trained from one seed."""

    label: str
    family: str
    seed: int
    options: dict[str, Any]
    epochs: list[EpochRecord] = field(default_factory=list)
    #: Epoch at which the training loss stopped being finite (the run stops there), or None.
    diverged_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()
        }
        return data

    def epochs_to_reach(self, target_loss: float) -> int | None:
        """The first epoch whose training loss is <= ``target_loss``, or None."""
        for record in self.epochs:
            if record.train_loss <= target_loss:
                return record.epoch
        return None


@dataclass(frozen=True)
class Statistic:
    """Mean and spread of one quantity over seeds; ``count`` seeds had a value."""

    mean: float
    std: float
    minimum: float
    maximum: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Statistic:
        """Sample standard deviation (ddof 1; 0 for a single seed) of the finite-or-NaN values."""
        if not values:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        return cls(float(array.mean()), std, float(array.min()), float(array.max()), len(array))

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        """``mean ± std`` (or ``—`` when no seed had a value)."""
        if self.count == 0 or math.isnan(self.mean):
            return "—"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


@dataclass(frozen=True)
class Summary:
    """One optimizer over its seeds: the numbers of the table."""

    label: str
    family: str
    lr: float
    seeds: int
    final_train_loss: Statistic
    best_test_accuracy: Statistic
    final_test_accuracy: Statistic
    #: Over the seeds that reached the target (``count`` of them).
    epochs_to_target: Statistic
    seconds_per_run: Statistic
    diverged: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(runs: list[RunResult], target_loss: float) -> list[Summary]:
    """Group runs by optimizer label (in first-seen order) and reduce over seeds."""
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    summaries = []
    for label, group in groups.items():
        finished = [run for run in group if run.epochs]
        reached = [run.epochs_to_reach(target_loss) for run in finished]
        summaries.append(
            Summary(
                label=label,
                family=group[0].family,
                lr=float(group[0].options["lr"]),
                seeds=len(group),
                final_train_loss=Statistic.of([run.epochs[-1].train_loss for run in finished]),
                best_test_accuracy=Statistic.of(
                    [max(r.test_accuracy for r in run.epochs) for run in finished]
                ),
                final_test_accuracy=Statistic.of(
                    [run.epochs[-1].test_accuracy for run in finished]
                ),
                epochs_to_target=Statistic.of([float(e) for e in reached if e is not None]),
                seconds_per_run=Statistic.of(
                    [sum(r.seconds for r in run.epochs) for run in finished]
                ),
                diverged=sum(run.diverged_at is not None for run in group),
            )
        )
    return summaries
