"""Draw docs/effective_step.png: Padam's step size against t for each variant and several p.

A constant gradient g = 1 through ``padam_core.padam_step`` (float64, amsgrad, the defaults
b1 = 0.9, b2 = 0.999, eps = 1e-8, lr = 1): the step |theta_t - theta_(t-1)| / lr. The torch and
optax variants give the full step from t = 1; the reference variant (the authors' update)
multiplies it by (1 - b2^t)^(1/2 - p), a warm-up of a few thousand steps for p < 1/2.

    PYTHONPATH=.:adapters .venv/bin/python scripts/effective_step.py [--output PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import padam_core

PARTIALS = (0.0, 0.0625, 0.125, 0.25, 0.5)
VARIANTS = ("reference", "torch", "optax")


def effective_steps(variant: str, partial: float, steps: int) -> np.ndarray:
    """The step sizes |theta_t - theta_(t-1)| / lr for t = 1..steps under g = 1."""
    param, grad = np.zeros(1), np.ones(1)
    exp_avg, exp_avg_sq, max_exp_avg_sq = np.zeros(1), np.zeros(1), np.zeros(1)
    sizes = np.empty(steps)
    for t in range(1, steps + 1):
        result = padam_core.padam_step(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, t,
            lr=1.0, partial=partial, variant=variant,
        )  # fmt: skip
        sizes[t - 1] = abs(float(result.param[0] - param[0]))
        param, exp_avg, exp_avg_sq = result.param, result.exp_avg, result.exp_avg_sq
        max_exp_avg_sq = result.max_exp_avg_sq
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("docs/effective_step.png"))
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(1, args.steps + 1)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for axis, variant in zip(axes, VARIANTS, strict=True):
        for partial in PARTIALS:
            label = f"p = {padam_core_fraction(partial)}"
            axis.semilogx(t, effective_steps(variant, partial, args.steps), label=label)
        axis.set_title(f'variant="{variant}"')
        axis.set_xlabel("step t")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("step size / lr  (constant gradient g = 1)")
    axes[0].legend()
    figure.suptitle(
        "Padam's effective step: reference = full step x (1 - b2^t)^(1/2 - p), b2 = 0.999"
    )
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)
    for partial in PARTIALS:
        sizes = effective_steps("reference", partial, 5000)
        print(
            f"reference p={padam_core_fraction(partial):>5}: "
            + "  ".join(f"t={n}: {sizes[n - 1]:.3f}" for n in (1, 10, 100, 1000, 5000))
        )
    print(f"wrote {args.output}")


def padam_core_fraction(partial: float) -> str:
    return {0.0: "0", 0.0625: "1/16", 0.125: "1/8", 0.25: "1/4", 0.5: "1/2"}[partial]


if __name__ == "__main__":
    main()
