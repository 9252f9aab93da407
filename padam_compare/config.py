"""The settings of one ``padam compare`` run: defaults, presets, TOML file and flags, merged.

Precedence, lowest first: the built-in defaults (the paper's hyperparameters), the preset, the
TOML file (``--config``), the command-line flags. Every setting is reachable both ways; the TOML
keys are the flag names with ``_`` for ``-``, and per-optimizer settings live in
``[optimizer.<name>]`` tables (flags: ``--lr NAME=VALUE``, ``--set NAME.KEY=VALUE``).

The paper's recipe (Chen et al., 2018, section 5 and the authors' scripts): batch 128, 200
epochs, learning rate divided by 10 at epochs 100 and 150, weight decay 5e-4 (L2, added to the
gradient), Padam p = 1/8 with lr 0.1, momentum SGD lr 0.1 (momentum 0.9), Adam and AMSGrad lr
0.001, betas (0.9, 0.999). AdamW is not in the authors' scripts: it gets lr 0.001 and a
decoupled weight decay of 0.05, chosen so that its shrink per step, lr * weight_decay = 5e-5,
equals momentum SGD's (0.1 * 5e-4).
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

__all__ = [
    "DEFAULT_OPTIMIZER_OPTIONS",
    "FRAMEWORKS",
    "MODELS",
    "OPTIMIZER_FAMILIES",
    "PRESETS",
    "CompareConfig",
    "ConfigError",
    "OptimizerRun",
    "build_config",
    "format_partial",
    "load_toml",
    "to_toml",
]


class ConfigError(Exception):
    """An invalid setting (unknown key, wrong type, value out of range)."""


FRAMEWORKS: Final = ("torch", "jax", "keras")
MODELS: Final = ("cnn1d", "mlp", "vgg16", "resnet18", "wrn16_4")
DATASET_NAMES: Final = ("mnist1d", "digits", "cifar10", "cifar100")
OPTIMIZER_FAMILIES: Final = ("sgd", "adam", "amsgrad", "adamw", "padam")

_BETAS: Final = (0.9, 0.999)
_EPS: Final = 1e-8

#: Per-optimizer defaults (the paper's learning rates). ``weight_decay`` absent means the global
#: ``weight_decay`` setting, applied as the paper does (coupled L2; decoupled for AdamW).
DEFAULT_OPTIMIZER_OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": False},
    "adam": {"lr": 0.001, "betas": _BETAS, "eps": _EPS},
    "amsgrad": {"lr": 0.001, "betas": _BETAS, "eps": _EPS},
    "adamw": {"lr": 0.001, "betas": _BETAS, "eps": _EPS, "weight_decay": 0.05},
    "padam": {"lr": 0.1, "betas": _BETAS, "eps": _EPS, "variant": "reference", "amsgrad": True},
}
_OPTION_TYPES: Final[dict[str, type | tuple[type, ...]]] = {
    "lr": float,
    "momentum": float,
    "nesterov": bool,
    "betas": tuple,
    "eps": float,
    "weight_decay": float,
    "variant": str,
    "amsgrad": bool,
}
_LABELS: Final = {
    "sgd": "SGD-momentum",
    "adam": "Adam",
    "amsgrad": "AMSGrad",
    "adamw": "AdamW",
    "padam": "Padam",
}

_PAPER_RECIPE: Final[dict[str, Any]] = {
    "dataset": "cifar10",
    "epochs": 200,
    "batch_size": 128,
    "milestones": [100, 150],
    "seeds": [0],
    "augment": True,
    "target_loss": 0.05,
}

#: Named starting points. ``mnist1d`` is the default: minutes on two CPU cores.
PRESETS: Final[dict[str, dict[str, Any]]] = {
    # One thread: these networks are too small to gain from intra-op parallelism, and on a
    # shared machine two threads that wait for each other ran 20x slower than one (measured).
    "mnist1d": {"dataset": "mnist1d", "model": "cnn1d", "threads": 1},
    "digits": {"dataset": "digits", "model": "mlp", "threads": 1},
    "paper-vgg16": {**_PAPER_RECIPE, "model": "vgg16"},
    "paper-resnet18": {**_PAPER_RECIPE, "model": "resnet18"},
    "paper-wrn16-4": {**_PAPER_RECIPE, "model": "wrn16_4"},
}


def format_partial(partial: float) -> str:
    """``0.125 -> "1/8"``; a value that is not a simple fraction prints as a decimal."""
    fraction = Fraction(partial).limit_denominator(64)
    exact = math.isclose(float(fraction), partial, rel_tol=0, abs_tol=1e-12)
    if fraction.denominator > 1 and exact:
        return f"{fraction.numerator}/{fraction.denominator}"
    return f"{partial:g}"


@dataclass(frozen=True)
class OptimizerRun:
    """One optimizer to compare: its family, display label and resolved hyperparameters."""

    family: str
    label: str
    options: dict[str, Any]


@dataclass
class CompareConfig:
    """Every setting of ``padam compare`` (see the module docstring for precedence)."""

    preset: str = "mnist1d"
    framework: str = "torch"
    dataset: str = "mnist1d"
    data_dir: str | None = None
    model: str = "cnn1d"
    epochs: int = 30
    batch_size: int = 128
    #: Epochs after which the learning rate is multiplied by ``lr_decay``. ``None``: the paper's
    #: schedule scaled to ``epochs`` (at 1/2 and 3/4 of the run: 100 and 150 of 200).
    milestones: list[int] | None = None
    lr_decay: float = 0.1
    weight_decay: float = 5e-4
    optimizers: list[str] = field(default_factory=lambda: list(OPTIMIZER_FAMILIES))
    partials: list[float] = field(default_factory=lambda: [0.125])
    #: Padam's variants, one run per variant and partial; empty: ``optimizer.padam.variant``.
    variants: list[str] = field(default_factory=list)
    optimizer: dict[str, dict[str, Any]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_OPTIMIZER_OPTIONS)
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: "Epochs to reach" column: the first epoch whose mean training loss is <= this.
    target_loss: float = 0.1
    train_size: int | None = None
    test_size: int | None = None
    #: Random crops (padding 4) and horizontal flips; ``None``: on for CIFAR, off otherwise.
    augment: bool | None = None
    device: str = "auto"
    threads: int | None = None
    output_dir: str = "padam-compare"
    progress: bool = True

    # ------------------------------------------------------------------ derived values

    def resolved_milestones(self) -> list[int]:
        """The learning-rate milestones actually used."""
        if self.milestones is not None:
            return list(self.milestones)
        return sorted({max(1, self.epochs // 2), max(1, (3 * self.epochs) // 4)})

    def optimizer_runs(self) -> list[OptimizerRun]:
        """The optimizers to compare, Padam once per ``partial``, with resolved options."""
        runs = []
        for family in self.optimizers:
            options = dict(self.optimizer[family])
            options.setdefault("weight_decay", self.weight_decay)
            if family == "padam":
                for variant in self.variants or [options.get("variant", "reference")]:
                    for partial in self.partials:
                        label = f"Padam p={format_partial(partial)}"
                        if self.variants:
                            label += f" {variant}"
                        run_options = {**options, "partial": partial, "variant": variant}
                        runs.append(OptimizerRun(family, label, run_options))
            else:
                runs.append(OptimizerRun(family, _LABELS[family], options))
        return runs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy, with the milestones actually used."""
        data = asdict(self)
        data["milestones"] = self.resolved_milestones()
        return data

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first invalid setting."""

        def check(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(message)

        check(
            self.preset in PRESETS,
            f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}",
        )
        check(
            self.framework in FRAMEWORKS,
            f"unknown framework {self.framework!r}; expected one of {', '.join(FRAMEWORKS)}",
        )
        check(
            self.dataset in DATASET_NAMES,
            f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASET_NAMES)}",
        )
        check(
            self.model in MODELS,
            f"unknown model {self.model!r}; expected one of {', '.join(MODELS)}",
        )
        image_models = ("vgg16", "resnet18", "wrn16_4")
        if self.model in image_models:
            check(
                self.dataset in ("cifar10", "cifar100"),
                f"model {self.model} is a CIFAR network (32x32 RGB images); use it with "
                "--dataset cifar10 or cifar100",
            )
        if self.model == "cnn1d":
            check(
                self.dataset == "mnist1d",
                "model cnn1d takes 1-D signals: use it with --dataset mnist1d (or --model mlp)",
            )
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        # The same bounds however a value arrived (flag or TOML): finite numbers that fit the
        # float32 the models train in, and integers the frameworks can take.
        check(
            _fits_float32(self.lr_decay) and self.lr_decay > 0,
            f"lr_decay must be a finite number > 0, got {self.lr_decay}",
        )
        check(
            _fits_float32(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be a finite number >= 0, got {self.weight_decay}",
        )
        check(
            _fits_float32(self.target_loss),
            f"target_loss must be a finite number > 0, got {self.target_loss}",
        )
        check(
            all(m >= 1 for m in self.resolved_milestones()),
            f"milestones must be epochs >= 1, got {self.milestones}",
        )
        check(len(self.optimizers) > 0, "optimizers must name at least one optimizer")
        for name in self.optimizers:
            check(
                name in OPTIMIZER_FAMILIES,
                f"unknown optimizer {name!r}; expected some of {', '.join(OPTIMIZER_FAMILIES)}",
            )
        check(
            len(set(self.optimizers)) == len(self.optimizers),
            f"optimizers lists a name twice: {self.optimizers}",
        )
        check(len(self.partials) > 0, "partials must hold at least one value of p")
        for partial in self.partials:
            check(
                0 <= partial <= 0.5,
                f"Invalid partial value: {partial} (expected 0 <= partial <= 0.5)",
            )
        from padam_core import VARIANTS

        for variant in self.variants:
            check(
                variant in VARIANTS,
                f"unknown variant {variant!r}; expected some of {', '.join(VARIANTS)}",
            )
        check(
            len(set(self.variants)) == len(self.variants),
            f"variants lists a name twice: {self.variants}",
        )
        check(len(self.seeds) > 0, "seeds must hold at least one seed")
        check(len(set(self.seeds)) == len(self.seeds), f"seeds lists a seed twice: {self.seeds}")
        check(self.target_loss > 0, f"target_loss must be > 0, got {self.target_loss}")
        for size_name in ("train_size", "test_size"):
            size = getattr(self, size_name)
            check(size is None or size >= 1, f"{size_name} must be >= 1, got {size}")
        check(
            self.threads is None or 1 <= self.threads <= _MAX_THREADS,
            f"threads must be between 1 and {_MAX_THREADS}, got {self.threads}",
        )
        check(
            all(0 <= seed < 2**32 for seed in self.seeds),
            f"seeds must lie in 0 .. 2**32 - 1, got {self.seeds}",
        )
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            f"device must be auto, cpu or cuda[:N], got {self.device!r}",
        )
        for family, options in self.optimizer.items():
            check(
                family in OPTIMIZER_FAMILIES,
                f"[optimizer.{family}]: unknown optimizer; "
                f"expected one of {', '.join(OPTIMIZER_FAMILIES)}",
            )
            allowed = set(DEFAULT_OPTIMIZER_OPTIONS[family]) | {"weight_decay"}
            for key, value in options.items():
                check(
                    key in allowed,
                    f"optimizer {family} has no setting {key!r}; it takes "
                    f"{', '.join(sorted(allowed))}",
                )
                _check_option(family, key, value)


_MAX_THREADS: Final = 4096
_FLOAT32_MAX: Final = 3.4028234663852886e38


def _fits_float32(value: Any) -> bool:
    """A finite real number no larger than float32 can hold."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= _FLOAT32_MAX
    )


def _check_option(family: str, key: str, value: Any) -> None:
    where = f"optimizer {family} setting {key}"
    if key in ("lr", "eps", "weight_decay", "momentum"):
        if not (isinstance(value, float) and _fits_float32(value) and value >= 0):
            raise ConfigError(f"{where} must be a finite number >= 0, got {value!r}")
        if key == "eps" and value == 0:
            raise ConfigError(f"{where} must be > 0, got {value!r}")
        if key == "momentum" and value >= 1:
            raise ConfigError(f"{where} must be < 1, got {value!r}")
    elif key == "betas":
        if not (
            isinstance(value, tuple)
            and len(value) == 2
            and all(isinstance(b, float) and 0 <= b < 1 for b in value)
        ):
            raise ConfigError(f"{where} must be two numbers in [0, 1), got {value!r}")
    elif key in ("nesterov", "amsgrad"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif key == "variant":
        from padam_core import VARIANTS

        if value not in VARIANTS:
            raise ConfigError(f"{where} must be one of {', '.join(VARIANTS)}, got {value!r}")


# --------------------------------------------------------------------------- merging


def coerce_option(family: str, key: str, value: Any) -> Any:
    """Convert a TOML or flag value to the type of an optimizer option (ints -> floats)."""
    kind = _OPTION_TYPES.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(
                f"optimizer {family} setting {key} must be a number, got {value!r}"
            ) from None
    if kind is bool and isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"optimizer {family} setting {key} must be true or false, got {value!r}")
    if kind is tuple:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            try:
                return tuple(float(item) for item in value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"optimizer {family} setting {key} must be numbers, got {value!r}"
                ) from None
    return value


_FIELD_TYPES: Final = {f.name: f.type for f in fields(CompareConfig)}


def _coerce_field(name: str, value: Any, source: str) -> Any:
    """Check/convert a top-level value read from TOML to the dataclass field's type."""
    kind = str(_FIELD_TYPES[name])

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {name} must be {expected}, got {value!r}")

    def is_int(item: Any) -> bool:
        return isinstance(item, int) and not isinstance(item, bool)

    if kind.startswith("int"):
        if not is_int(value):
            raise fail("an integer")
        return value
    if kind == "float":
        if not (is_int(value) or isinstance(value, float)):
            raise fail("a number")
        return float(value)
    if kind == "bool" or kind.startswith("bool"):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if kind.startswith("list[int]"):
        if not (isinstance(value, list) and all(is_int(item) for item in value)):
            raise fail("a list of integers")
        return list(value)
    if kind == "list[float]":
        if not (isinstance(value, list) and all(is_int(i) or isinstance(i, float) for i in value)):
            raise fail("a list of numbers")
        return [float(item) for item in value]
    if kind == "list[str]":
        if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise fail("a list of strings")
        return list(value)
    return value  # pragma: no cover - every field is handled above


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file; its keys are checked when applied (:meth:`build_config`)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def build_config(
    preset: str | None = None,
    file_values: dict[str, Any] | None = None,
    flag_values: dict[str, Any] | None = None,
    optimizer_overrides: dict[str, dict[str, Any]] | None = None,
    source: str = "config file",
) -> CompareConfig:
    """Merge defaults < preset < TOML values < flags, validate, and return the config.

    ``flag_values`` holds only the flags the user gave (already typed by argparse);
    ``optimizer_overrides`` the ``--lr``/``--set`` values, per optimizer.
    """
    file_values = dict(file_values or {})
    flag_values = dict(flag_values or {})
    chosen = preset or flag_values.pop("preset", None) or file_values.get("preset") or "mnist1d"
    flag_values.pop("preset", None)
    file_values.pop("preset", None)
    if chosen not in PRESETS:
        raise ConfigError(f"unknown preset {chosen!r}; expected one of {', '.join(PRESETS)}")
    config = CompareConfig(preset=chosen)
    for name, value in PRESETS[chosen].items():
        setattr(config, name, copy.deepcopy(value))

    optimizer_tables = file_values.pop("optimizer", {})
    if not isinstance(optimizer_tables, dict):
        raise ConfigError(f"{source}: [optimizer.<name>] must be tables")
    for name, value in file_values.items():
        if name not in _FIELD_TYPES or name == "optimizer":
            known = ", ".join(sorted(set(_FIELD_TYPES) - {"optimizer"}))
            raise ConfigError(
                f"{source}: unknown setting {name!r}; known: {known}, and [optimizer.<name>] tables"
            )
        setattr(config, name, _coerce_field(name, value, source))
    for family, table in optimizer_tables.items():
        if family not in OPTIMIZER_FAMILIES:
            raise ConfigError(
                f"{source}: [optimizer.{family}]: unknown optimizer; expected one "
                f"of {', '.join(OPTIMIZER_FAMILIES)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: optimizer.{family} must be a table")
        for key, value in table.items():
            config.optimizer[family][key] = coerce_option(family, key, value)

    for name, value in flag_values.items():
        setattr(config, name, value)
    for family, table in (optimizer_overrides or {}).items():
        for key, value in table.items():
            config.optimizer[family][key] = coerce_option(family, key, value)
    config.validate()
    return config


def to_toml(config: CompareConfig) -> str:
    """``config`` as a TOML file that :func:`load_toml` + :func:`build_config` read back.

    Written by tomli-w; settings that are ``None`` (meaning "automatic") have no TOML value and
    are written as comments.
    """
    import tomli_w

    header = ["# padam compare configuration (padam compare --config FILE)"]
    data: dict[str, Any] = {}
    for item in fields(config):
        if item.name == "optimizer":
            continue
        value = getattr(config, item.name)
        if value is None:
            header.append(f"# {item.name} = (automatic)")
        else:
            data[item.name] = value
    data["optimizer"] = {family: dict(config.optimizer[family]) for family in OPTIMIZER_FAMILIES}
    return "\n".join(header) + "\n" + tomli_w.dumps(data)
