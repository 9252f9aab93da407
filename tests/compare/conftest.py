"""Fixtures for the ``padam compare`` tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.compare.helpers import make_cifar10


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny CIFAR-10 directory in CIFAR's own format and the arrays written into it."""
    directory = tmp_path / "cifar10"
    return directory, make_cifar10(directory)
