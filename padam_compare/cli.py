"""The ``padam`` command: ``padam compare`` trains one model with several optimizers.

Examples::

    padam compare                                  # MNIST-1D, 5 optimizers x 3 seeds, minutes
    padam compare --partials 1/8 1/4 --seeds 0 1   # Padam at two values of p
    padam compare --preset paper-resnet18 --data-dir ~/data/cifar-10-batches-py
    padam compare --config my.toml --epochs 10     # a TOML file, one setting overridden
    padam compare --print-config > my.toml         # the resolved settings as a TOML file
"""

from __future__ import annotations

import argparse
import shlex
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from padam_compare.config import (
    DATASET_NAMES,
    DEFAULT_OPTIMIZER_OPTIONS,
    FRAMEWORKS,
    MODELS,
    OPTIMIZER_FAMILIES,
    PRESETS,
    ConfigError,
    build_config,
    load_toml,
    to_toml,
)

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _partial(text: str) -> float:
    """p as a decimal or a fraction (``0.125`` or ``1/8``), in [0, 1/2]."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected p as a number or fraction, got {text!r}"
        ) from None
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"partial must satisfy 0 <= p <= 1/2, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a seed >= 0, got {text!r}")
    return value


def _assignment(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The ``padam`` argument parser (``compare`` subcommand)."""
    parser = argparse.ArgumentParser(
        prog="padam",
        description="Padam (partially adaptive momentum estimation) tools.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare = commands.add_parser(
        "compare",
        help="train one model with several optimizers and compare them",
        description=(
            "Train one model with momentum SGD, Adam, AMSGrad, AdamW and Padam over several "
            "seeds; print a table and write CSV, JSON and a PNG figure. Defaults: the paper's "
            "hyperparameters (Chen et al., 2018) on MNIST-1D (generated offline). Settings "
            "come from the preset, then --config FILE, then these flags."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    compare.set_defaults(compare_parser=compare)  # for usage errors found after parsing
    S = argparse.SUPPRESS  # only the flags the user typed reach the config
    add = compare.add_argument
    add(
        "--config",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML file with any of these settings (keys: flag names with _; per-optimizer "
        "settings in [optimizer.NAME] tables)",
    )
    add(
        "--preset",
        choices=list(PRESETS),
        default=S,
        help="starting point: mnist1d (default) or the paper's CIFAR recipes "
        "(200 epochs, batch 128, lr /10 at epochs 100 and 150, weight decay 5e-4)",
    )
    add(
        "--framework",
        choices=list(FRAMEWORKS),
        default=S,
        help="framework (default torch); jax and keras have the mlp and cnn1d networks",
    )
    add(
        "--dataset",
        choices=list(DATASET_NAMES),
        default=S,
        help="mnist1d and digits are built in; cifar10/cifar100 are read from --data-dir",
    )
    add(
        "--data-dir",
        metavar="DIR",
        default=S,
        help="directory with the CIFAR python-pickle files (or torchvision's layout)",
    )
    add("--model", choices=list(MODELS), default=S, help="network")
    add("--epochs", type=_positive_int, default=S, help="epochs per run (default 30)")
    add("--batch-size", type=_positive_int, default=S, help="batch size (default 128)")
    add(
        "--milestones",
        type=_positive_int,
        nargs="*",
        metavar="EPOCH",
        default=S,
        help="multiply the learning rate by --lr-decay after these epochs (default: 1/2 and 3/4 "
        "of --epochs, the paper's 100 and 150 of 200; none given: constant)",
    )
    add("--lr-decay", type=_positive_float, default=S, help="learning-rate factor (default 0.1)")
    add(
        "--weight-decay",
        type=_nonnegative_float,
        default=S,
        help="weight decay for every optimizer that does not set its own (default 5e-4, L2)",
    )
    add(
        "--optimizers",
        nargs="+",
        choices=list(OPTIMIZER_FAMILIES),
        metavar="NAME",
        default=S,
        help=f"optimizers to compare, some of {', '.join(OPTIMIZER_FAMILIES)} (default all)",
    )
    add(
        "--partials",
        nargs="+",
        type=_partial,
        metavar="P",
        default=S,
        help="Padam's partial p, one run per value, e.g. 1/8 1/4 (default 1/8)",
    )
    add(
        "--variants",
        nargs="+",
        choices=["reference", "torch", "optax"],
        metavar="VARIANT",
        default=S,
        help="Padam's variants, one run per variant and p, some of reference torch optax "
        "(default: padam.variant, reference)",
    )
    add(
        "--lr",
        action="append",
        type=_assignment,
        metavar="NAME=VALUE",
        default=[],
        help="learning rate of one optimizer, e.g. --lr padam=0.1 (defaults: sgd 0.1, adam "
        "0.001, amsgrad 0.001, adamw 0.001, padam 0.1: the paper's)",
    )
    add(
        "--set",
        action="append",
        type=_assignment,
        metavar="NAME.KEY=VALUE",
        default=[],
        dest="settings",
        help="any optimizer setting, e.g. --set padam.variant=torch --set adamw.weight_decay=0.01 "
        "--set sgd.momentum=0.9 --set adam.betas=0.9,0.99",
    )
    add(
        "--seeds",
        nargs="+",
        type=_seed,
        metavar="SEED",
        default=S,
        help="one run per seed and optimizer (default 0 1 2)",
    )
    add(
        "--target-loss",
        type=_positive_float,
        default=S,
        help="the table's 'epochs to reach' column: first epoch with train loss <= this",
    )
    add("--train-size", type=_positive_int, default=S, help="use only this many training examples")
    add("--test-size", type=_positive_int, default=S, help="use only this many test examples")
    add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="random crops and flips (default: on for CIFAR)",
    )
    add("--device", default=S, help="auto, cpu or cuda[:N] (default auto)")
    add(
        "--threads",
        type=_positive_int,
        default=S,
        help="torch CPU threads (JAX uses XLA's own pool)",
    )
    add(
        "--output-dir",
        metavar="DIR",
        default=S,
        help="where the table, CSV, JSON and figure go (default ./padam-compare)",
    )
    add("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")
    add("--print-config", action="store_true", help="print the resolved settings as TOML and exit")
    return parser


def _optimizer_overrides(
    lrs: list[tuple[str, str]], settings: list[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in lrs:
        if name not in OPTIMIZER_FAMILIES:
            raise ConfigError(
                f"--lr {name}={value}: unknown optimizer {name!r}; expected one of "
                f"{', '.join(OPTIMIZER_FAMILIES)}"
            )
        overrides.setdefault(name, {})["lr"] = value
    for target, value in settings:
        family, dot, key = target.partition(".")
        if not dot or family not in OPTIMIZER_FAMILIES:
            raise ConfigError(
                f"--set {target}={value}: expected NAME.KEY=VALUE with NAME one of "
                f"{', '.join(OPTIMIZER_FAMILIES)}"
            )
        allowed = set(DEFAULT_OPTIMIZER_OPTIONS[family]) | {"weight_decay"}
        if key not in allowed:
            raise ConfigError(
                f"--set {target}={value}: optimizer {family} has no setting "
                f"{key!r}; it takes {', '.join(sorted(allowed))}"
            )
        overrides.setdefault(family, {})[key] = value
    return overrides


def _compare(arguments: argparse.Namespace, argv: list[str]) -> int:
    flags = vars(arguments).copy()
    for name in ("command", "config", "lr", "settings", "print_config", "compare_parser"):
        flags.pop(name, None)
    compare_parser: argparse.ArgumentParser = arguments.compare_parser
    try:
        file_values = load_toml(arguments.config) if arguments.config else {}
        overrides = _optimizer_overrides(arguments.lr, arguments.settings)
        config = build_config(
            file_values=file_values,
            flag_values=flags,
            optimizer_overrides=overrides,
            source=str(arguments.config or "config"),
        )
    except ConfigError as error:
        compare_parser.error(str(error))  # usage + message, exit status 2
    if arguments.print_config:
        sys.stdout.write(to_toml(config))
        return 0

    from padam_compare.data import DataError
    from padam_compare.report import OUTPUT_FILES, format_table, write_outputs
    from padam_compare.runner import SetupError, run_comparison

    command = "padam " + shlex.join(argv)
    output_dir = Path(config.output_dir).expanduser()
    try:  # before any training: an unwritable output directory should not cost a run
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / ".padam-compare-write-test").touch()
        (output_dir / ".padam-compare-write-test").unlink()
    except OSError as error:
        print(
            f"padam compare: error: cannot write to output directory {output_dir}: {error}",
            file=sys.stderr,
        )
        return 1
    finished: list[Any] = []

    def save(partial_comparison: Any) -> None:
        finished[:] = [partial_comparison]
        write_outputs(partial_comparison, output_dir, command)

    try:
        comparison = run_comparison(config, after_each_run=save)
    except ConfigError as error:
        compare_parser.error(str(error))
    except (DataError, SetupError) as error:
        print(f"padam compare: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        done = len(finished[0].runs) if finished else 0
        where = f"; the {done} finished runs are in {output_dir}" if done else ""
        print(f"\npadam compare: interrupted{where}", file=sys.stderr)
        return 130
    paths = {name: output_dir / name for name in OUTPUT_FILES}
    print()
    print(
        f"{config.dataset} · {config.model} · {config.framework} · {config.epochs} epochs · "
        f"seeds {config.seeds} · {comparison.wall_seconds:.0f} s"
    )
    print(format_table(comparison.summaries, config.target_loss))
    print()
    print(f"Table:  {paths['summary.md']}  (and {paths['summary.csv'].name})")
    print(f"Figure: {paths['curves.png']}")
    print(f"Every epoch: {paths['epochs.csv']}, {paths['results.json'].name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``padam`` console script; returns the exit status.

    Usage errors (bad flags, invalid settings, malformed config file) print the usage and a
    message and return 2, as argparse does; a missing or malformed data directory returns 1.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
        if arguments.command is None:
            parser.print_help(sys.stderr)
            return 2
        return _compare(arguments, argv)
    except SystemExit as exit_request:  # argparse's --help (0) and usage errors (2)
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
