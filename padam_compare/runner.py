"""Run a comparison: load the data, train every (optimizer, seed) pair, summarize.

The framework is chosen through :data:`BACKENDS`, a registry name -> loader; a backend trains
one run and reports each epoch. Everything else (data, tables, files, figure) is shared.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from padam_compare.config import CompareConfig, ConfigError, OptimizerRun
from padam_compare.data import Dataset, load_dataset
from padam_compare.errors import SetupError
from padam_compare.results import EpochRecord, RunResult, Summary, summarize

__all__ = ["BACKENDS", "Backend", "Comparison", "SetupError", "get_backend", "run_comparison"]


class Backend(Protocol):
    """What a framework provides: train one run, describe itself."""

    name: str

    def describe(self) -> dict[str, Any]: ...

    def check(self, runs: list[OptimizerRun]) -> None:
        """Build every optimizer once (on a dummy parameter) so a problem shows before training;
        raise :class:`SetupError`."""

    def train(
        self, run: OptimizerRun, seed: int, on_epoch: Callable[[EpochRecord], None] | None = None
    ) -> RunResult: ...


BackendFactory = Callable[[CompareConfig, Dataset], Backend]


def _torch_backend() -> BackendFactory:
    try:
        from padam_compare.torch_backend import TorchBackend
    except ImportError as error:
        raise ConfigError(
            f"--framework torch needs PyTorch ({error}); install padam[torch,compare]"
        ) from error
    return TorchBackend


def _jax_backend() -> BackendFactory:
    try:
        from padam_compare.jax_backend import JaxBackend
    except ImportError as error:
        raise ConfigError(
            f"--framework jax needs JAX, optax and flax ({error}); install padam[compare-jax]"
        ) from error
    return JaxBackend


def _keras_backend() -> BackendFactory:
    try:
        from padam_compare.keras_backend import KerasBackend
    except ImportError as error:
        raise ConfigError(
            f"--framework keras needs Keras 3 and a backend ({error}); install padam[keras]"
        ) from error
    return KerasBackend


#: Framework name -> loader of its backend class (imports the framework only when chosen).
BACKENDS: Final[dict[str, Callable[[], BackendFactory]]] = {
    "torch": _torch_backend,
    "jax": _jax_backend,
    "keras": _keras_backend,
}


def get_backend(framework: str) -> BackendFactory:
    """The backend class of ``framework``; ``ConfigError`` if it is not available."""
    if framework not in BACKENDS:
        raise ConfigError(f"unknown framework {framework!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[framework]()


@dataclass
class Comparison:
    """Everything a comparison produced."""

    config: CompareConfig
    dataset: Dataset
    environment: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def summaries(self) -> list[Summary]:
        return summarize(self.runs, self.config.target_loss)


class _Progress:
    """A tqdm bar per run (to stderr), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def start(self, description: str, total: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc=description, unit="epoch", leave=True, dynamic_ncols=True
            )

    def update(self, record: EpochRecord) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{record.train_loss:.3f}",
                test_acc=f"{100 * record.test_accuracy:.1f}%",
                refresh=False,
            )
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_comparison(
    config: CompareConfig, after_each_run: Callable[[Comparison], None] | None = None
) -> Comparison:
    """Train every optimizer of ``config`` from every seed; the results in memory.

    ``after_each_run`` is called with the comparison so far after every finished run (the CLI
    writes its files there, so a long run interrupted or killed keeps what it finished).
    """
    started = time.perf_counter()
    backend_class = get_backend(config.framework)  # fails before the data is read
    dataset = load_dataset(config.dataset, config.data_dir)
    if config.train_size is not None or config.test_size is not None:
        dataset = dataset.subset(config.train_size, config.test_size)
    backend = backend_class(config, dataset)
    environment = {
        **backend.describe(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "train_examples": len(dataset.y_train),
        "test_examples": len(dataset.y_test),
    }
    comparison = Comparison(config=config, dataset=dataset, environment=environment)
    backend.check(config.optimizer_runs())
    runs = [(run, seed) for run in config.optimizer_runs() for seed in config.seeds]
    progress = _Progress(config.progress)
    for number, (run, seed) in enumerate(runs, start=1):
        progress.start(f"[{number}/{len(runs)}] {run.label} seed {seed}", config.epochs)
        try:
            comparison.runs.append(backend.train(run, seed, on_epoch=progress.update))
        finally:
            progress.close()
        comparison.wall_seconds = time.perf_counter() - started
        if after_each_run is not None:
            after_each_run(comparison)
    return comparison
