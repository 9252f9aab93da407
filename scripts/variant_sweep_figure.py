"""Draw docs/compare_variants_sweep.png from a ``padam compare --variants ... --partials ...``
summary.csv: final training loss and final test accuracy against p, one line per variant, with
the SGD-momentum and Adam rows as horizontal references.

    PYTHONPATH=.:adapters .venv/bin/python scripts/variant_sweep_figure.py docs/compare_variants.csv
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

PARTIAL_ORDER = ("0", "1/16", "1/8", "1/4", "1/2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary", type=Path)
    parser.add_argument("--output", type=Path, default=Path("docs/compare_variants_sweep.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(args.summary.open(encoding="utf-8")))
    series: dict[str, dict[str, dict[str, str]]] = {}
    baselines = {}
    for row in rows:
        match = re.fullmatch(r"Padam p=(\S+) (\w+)", row["optimizer"])
        if match:
            series.setdefault(match.group(2), {})[match.group(1)] = row
        else:
            baselines[row["optimizer"]] = row

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(PARTIAL_ORDER))
    for variant, by_partial in series.items():
        present = [p for p in PARTIAL_ORDER if p in by_partial]
        positions = [PARTIAL_ORDER.index(p) for p in present]
        for axis, key, scale in (
            (loss_axis, "final_train_loss", 1.0),
            (accuracy_axis, "final_test_accuracy", 100.0),
        ):
            means = [scale * float(by_partial[p][f"{key}_mean"]) for p in present]
            spreads = [scale * float(by_partial[p][f"{key}_std"] or 0) for p in present]
            axis.errorbar(positions, means, yerr=spreads, marker="o", capsize=3, label=variant)
    for name, style in (("SGD-momentum", ":"), ("Adam", "--")):
        if name in baselines:
            loss_axis.axhline(float(baselines[name]["final_train_loss_mean"]), ls=style,
                              color="gray", label=name)  # fmt: skip
            accuracy_axis.axhline(100 * float(baselines[name]["final_test_accuracy_mean"]),
                                  ls=style, color="gray", label=name)  # fmt: skip
    loss_axis.set_yscale("log")
    loss_axis.set_ylabel("final training loss")
    accuracy_axis.set_ylabel("final test accuracy (%)")
    for axis in (loss_axis, accuracy_axis):
        axis.set_xticks(list(x), [f"p = {p}" for p in PARTIAL_ORDER])
        axis.grid(True, alpha=0.3)
    accuracy_axis.legend(title="Padam variant", fontsize=8)
    figure.suptitle("padam compare, MNIST-1D cnn1d, 30 epochs (~960 steps), lr 0.1, mean ± std")
    figure.tight_layout()
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
