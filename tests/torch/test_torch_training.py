"""A real, small training run: an MLP on scikit-learn's bundled digits (no download)."""

from __future__ import annotations

import pytest
import torch

from padam_torch import Padam
from tests.torch.helpers import batches, digits_tensors

STEPS = 600  # about 27 epochs of 1400 training images, batch 64
# Measured with this seed: 0.960 test accuracy (381 of 397) on both paths; asserted with margin.
REQUIRED_ACCURACY = 0.94


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_digits_mlp_reaches_stated_accuracy(foreach):
    features, labels, test_features, test_labels = digits_tensors(torch.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    # The paper's recipe: lr 0.1, p = 1/8, weight decay 5e-4 (here with a cosine schedule).
    optimizer = Padam(model.parameters(), lr=0.1, partial=0.125, weight_decay=5e-4, foreach=foreach)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    for _, (x, y) in zip(range(STEPS), batches(features, labels, 64), strict=False):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        accuracy = (model(test_features).argmax(dim=1) == test_labels).float().mean().item()
    assert accuracy >= REQUIRED_ACCURACY, f"test accuracy {accuracy:.3f}"
