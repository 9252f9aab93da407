"""The outputs of ``padam compare``: terminal/markdown table, CSV, JSON and the PNG figure.

Files written into the output directory:

``summary.md``   the table (markdown), with the command, machine and wall time
``summary.csv``  the table, one row per optimizer (mean and std over seeds)
``epochs.csv``   every epoch of every run (optimizer, seed, epoch, lr, losses, accuracies)
``results.json`` the resolved config, the environment, every epoch of every run, the summary
``curves.png``   training loss and test accuracy against epochs; one line per optimizer (mean
                 over seeds), the band between the lowest and highest seed shaded
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np

from padam_compare.results import RunResult, Summary

__all__ = ["OUTPUT_FILES", "format_table", "plot_curves", "write_outputs"]

OUTPUT_FILES: Final = ("summary.md", "summary.csv", "epochs.csv", "results.json", "curves.png")

_EPOCH_COLUMNS: Final = (
    "optimizer",
    "family",
    "partial",
    "seed",
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "seconds",
)


def _table_rows(summaries: list[Summary], target_loss: float) -> tuple[list[str], list[list[str]]]:
    header = [
        "optimizer",
        "lr",
        "final train loss",
        "best test acc (%)",
        "final test acc (%)",
        f"epochs to train loss ≤ {target_loss:g}",
        "s / run",
    ]
    rows = []
    for summary in summaries:
        label = summary.label
        if summary.diverged:
            label += f" ({summary.diverged}/{summary.seeds} diverged)"
        reached = summary.epochs_to_target
        if reached.count == 0:
            epochs_text = "not reached"
        else:
            epochs_text = reached.format(digits=1)
            if reached.count < summary.seeds:
                epochs_text += f" ({reached.count}/{summary.seeds} seeds)"
        rows.append(
            [
                label,
                f"{summary.lr:g}",
                summary.final_train_loss.format(digits=4),
                summary.best_test_accuracy.format(scale=100, digits=2),
                summary.final_test_accuracy.format(scale=100, digits=2),
                epochs_text,
                f"{summary.seconds_per_run.mean:.1f}",
            ]
        )
    return header, rows


def format_table(summaries: list[Summary], target_loss: float, markdown: bool = False) -> str:
    """The summary table; values are mean ± standard deviation over seeds."""
    header, rows = _table_rows(summaries, target_loss)
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def _write_epochs_csv(path: Path, runs: list[RunResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_EPOCH_COLUMNS)
        for run in runs:
            partial = run.options.get("partial", "")
            for record in run.epochs:
                writer.writerow(
                    [
                        run.label,
                        run.family,
                        partial,
                        run.seed,
                        record.epoch,
                        repr(record.lr),
                        repr(record.train_loss),
                        repr(record.train_accuracy),
                        repr(record.test_loss),
                        repr(record.test_accuracy),
                        f"{record.seconds:.4f}",
                    ]
                )


def _write_summary_csv(path: Path, summaries: list[Summary]) -> None:
    statistics = (
        "final_train_loss",
        "best_test_accuracy",
        "final_test_accuracy",
        "epochs_to_target",
        "seconds_per_run",
    )
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "optimizer",
                "family",
                "lr",
                "seeds",
                "diverged",
                "reached_target",
                *(f"{name}_{part}" for name in statistics for part in ("mean", "std")),
            ]
        )
        for summary in summaries:
            values = []
            for name in statistics:
                statistic = getattr(summary, name)
                values += [repr(statistic.mean), repr(statistic.std)]
            writer.writerow(
                [
                    summary.label,
                    summary.family,
                    repr(summary.lr),
                    summary.seeds,
                    summary.diverged,
                    summary.epochs_to_target.count,
                    *values,
                ]
            )


def _json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _curves(runs: list[RunResult], label: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs,) and (seeds, epochs) values of ``metric``, NaN where a run stopped early."""
    group = [run for run in runs if run.label == label]
    length = max(len(run.epochs) for run in group)
    values = np.full((len(group), length), np.nan)
    for row, run in enumerate(group):
        values[row, : len(run.epochs)] = [getattr(r, metric) for r in run.epochs]
    return np.arange(1, length + 1), values


def plot_curves(
    path: Path,
    runs: list[RunResult],
    title: str,
    target_loss: float | None = None,
    milestones: list[int] | None = None,
) -> None:
    """Two panels (training loss, log scale; test accuracy), one line per optimizer."""
    # The Agg canvas directly, not pyplot: no display, no global figure state.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    labels = list(dict.fromkeys(run.label for run in runs if run.epochs))
    colors = matplotlib.color_sequences["tab10"]
    length = max((len(run.epochs) for run in runs), default=0)
    # The accuracies end close together: an inset magnifies the second half of training.
    zoom = accuracy_axes.inset_axes((0.42, 0.08, 0.55, 0.5)) if length >= 4 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN epochs (divergence)
        for index, label in enumerate(labels):
            color = colors[index % len(colors)]
            for axes, metric, scale in (
                (loss_axes, "train_loss", 1.0),
                (accuracy_axes, "test_accuracy", 100.0),
            ):
                epochs, values = _curves(runs, label, metric)
                values = values * scale
                targets = [axes] if axes is loss_axes or zoom is None else [axes, zoom]
                for target in targets:
                    target.plot(
                        epochs,
                        np.nanmean(values, axis=0),
                        color=color,
                        label=label if target is loss_axes else None,
                        linewidth=1.6,
                    )
                    if values.shape[0] > 1:
                        target.fill_between(
                            epochs,
                            np.nanmin(values, axis=0),
                            np.nanmax(values, axis=0),
                            color=color,
                            alpha=0.2,
                            linewidth=0,
                        )
    if zoom is not None:
        start = length // 2 + 1
        late = [
            np.nanmin(_curves(runs, label, "test_accuracy")[1][:, start - 1 :]) for label in labels
        ]
        high = [
            np.nanmax(_curves(runs, label, "test_accuracy")[1][:, start - 1 :]) for label in labels
        ]
        finite_low = [v for v in late if np.isfinite(v)]
        finite_high = [v for v in high if np.isfinite(v)]
        if finite_low and finite_high:
            low, top = 100 * min(finite_low), 100 * max(finite_high)
            margin = max(0.1, 0.08 * (top - low))
            zoom.set_xlim(start, length)
            zoom.set_ylim(low - margin, top + margin)
        zoom.set_title(f"epochs {start}-{length}", fontsize=8)
        zoom.tick_params(labelsize=7)
        zoom.grid(True, alpha=0.3)
    seeds = len({run.seed for run in runs})
    band = f" (line: mean of {seeds} seeds; band: min to max)" if seeds > 1 else ""
    loss_axes.set_yscale("log")
    loss_axes.set_title("training loss" + band, fontsize=10)
    accuracy_axes.set_title("test accuracy (%)", fontsize=10)
    if target_loss is not None:
        loss_axes.axhline(target_loss, color="gray", linestyle="--", linewidth=0.8)
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        axes.grid(True, alpha=0.3)
        for milestone in milestones or []:
            axes.axvline(milestone + 0.5, color="gray", linestyle=":", linewidth=0.8)
    loss_axes.legend(loc="upper right", fontsize=9)
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=110)


def write_outputs(comparison: Any, output_dir: Path, command: str) -> dict[str, Path]:
    """Write every file of :data:`OUTPUT_FILES` into ``output_dir``; their paths by name."""
    output_dir.mkdir(parents=True, exist_ok=True)
    config = comparison.config
    summaries = comparison.summaries
    paths = {name: output_dir / name for name in OUTPUT_FILES}
    environment = comparison.environment
    title = (
        f"{config.dataset} · {config.model} · {config.framework} · {config.epochs} epochs · "
        f"batch {config.batch_size} · weight decay {config.weight_decay:g}"
    )

    _write_epochs_csv(paths["epochs.csv"], comparison.runs)
    _write_summary_csv(paths["summary.csv"], summaries)
    document = {
        "command": command,
        "config": config.to_dict(),
        "environment": environment,
        "wall_seconds": comparison.wall_seconds,
        "class_names": comparison.dataset.class_names,
        "summary": [summary.to_dict() for summary in summaries],
        "runs": [run.to_dict() for run in comparison.runs],
    }
    paths["results.json"].write_text(
        json.dumps(_json_safe(document), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    plot_curves(
        paths["curves.png"],
        comparison.runs,
        title,
        config.target_loss,
        config.resolved_milestones(),
    )
    versions = ", ".join(
        f"{key.removesuffix('_version')} {value}"
        for key, value in environment.items()
        if key.endswith("_version")
    )
    markdown = "\n".join(
        [
            f"# padam compare: {config.dataset}, {config.model}",
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {environment.get('cpu_count')} CPU cores visible, device "
            f"{environment.get('device')}, threads: {environment.get('threads')}; "
            f"{environment.get('platform')}; {versions}.",
            f"Wall time: {comparison.wall_seconds:.0f} s for {len(comparison.runs)} runs "
            f"({environment.get('train_examples')} training / {environment.get('test_examples')} "
            "test examples).",
            "",
            f"Mean ± standard deviation over seeds {config.seeds}; learning rate times "
            f"{config.lr_decay:g} after epochs {config.resolved_milestones()}.",
            "",
            format_table(summaries, config.target_loss, markdown=True),
            "",
            "![curves](curves.png)",
            "",
        ]
    )
    paths["summary.md"].write_text(markdown, encoding="utf-8")
    return paths
