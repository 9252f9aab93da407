"""Padam, AMSGrad and momentum SGD on softmax regression over scikit-learn's bundled digits.

All three are padam_core.Padam at a different partial power: p = 1/2 is AMSGrad and p = 0 is
(bias-scaled) momentum SGD, which is Padam's point. Learning rates are the paper's: 0.1 for
Padam and momentum SGD, 0.001 for AMSGrad. Runs in seconds on NumPy alone.

    python examples/numpy_digits.py [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import padam_core

OPTIMIZERS = {  # name -> padam_core.Padam keyword arguments
    "Padam (p=1/8)": {"partial": 0.125, "lr": 0.1},
    "AMSGrad (p=1/2)": {"partial": 0.5, "lr": 0.001},
    "momentum SGD (p=0)": {"partial": 0.0, "lr": 0.1},
}


def softmax_loss_and_grads(weights, bias, x, y):
    """Mean cross-entropy of softmax(x @ weights + bias) and its gradients."""
    logits = x @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(probabilities[np.arange(len(y)), y] + 1e-12))
    delta = probabilities
    delta[np.arange(len(y)), y] -= 1.0
    delta /= len(y)
    return loss, x.T @ delta, delta.sum(axis=0)


def accuracy(weights, bias, x, y) -> float:
    return float(np.mean(np.argmax(x @ weights + bias, axis=1) == y))


def train(settings: dict, data, *, epochs: int, seed: int, batch_size: int = 64) -> dict:
    x_train, x_test, y_train, y_test = data
    rng = np.random.default_rng(seed)
    params = {
        "weights": 0.01 * rng.normal(size=(x_train.shape[1], 10)),
        "bias": np.zeros(10),
    }
    optimizer = padam_core.Padam(params, weight_decay=5e-4, **settings)
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(y_train))
        for begin in range(0, len(order), batch_size):
            batch = order[begin : begin + batch_size]
            _, grad_w, grad_b = softmax_loss_and_grads(
                params["weights"], params["bias"], x_train[batch], y_train[batch]
            )
            optimizer.step({"weights": grad_w, "bias": grad_b})
    loss, _, _ = softmax_loss_and_grads(params["weights"], params["bias"], x_train, y_train)
    return {
        "train loss": loss,
        "train acc": accuracy(params["weights"], params["bias"], x_train, y_train),
        "test acc": accuracy(params["weights"], params["bias"], x_test, y_test),
        "steps": optimizer.count,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    data = train_test_split(x, y, test_size=0.25, random_state=args.seed, stratify=y)
    print(f"softmax regression on sklearn digits, {args.epochs} epochs, batch 64, seed {args.seed}")
    print(f"{'optimizer':<20} {'train loss':>10} {'train acc':>9} {'test acc':>8} {'seconds':>7}")
    for name, settings in OPTIMIZERS.items():
        row = train(settings, data, epochs=args.epochs, seed=args.seed)
        print(
            f"{name:<20} {row['train loss']:>10.4f} {row['train acc']:>9.3f} "
            f"{row['test acc']:>8.3f} {row['seconds']:>7.2f}"
        )


if __name__ == "__main__":
    main()
