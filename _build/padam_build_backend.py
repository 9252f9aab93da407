"""setuptools' PEP 517 backend, run on a temporary copy of the source tree.

setuptools builds in place: ``pip install <checkout>`` (non-editable) leaves ``build/`` and
``padam.egg-info/`` in the user's checkout. Every hook here that setuptools would run in place
copies the tree (without VCS, virtualenv and build outputs) to a temporary directory and runs
setuptools there, so the checkout is never written to. Editable installs must point into the
checkout, so they are setuptools' own hooks, unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (re-exported hooks)
    build_editable,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
)

_SKIPPED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", ".asv", "runs", "padam-compare",
)


@contextmanager
def _in_copy() -> Iterator[None]:
    """Run the body with the working directory set to a fresh copy of the source tree."""
    source = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="padam-build-") as scratch:
        copy = Path(scratch) / "src"
        shutil.copytree(source, copy, ignore=_SKIPPED, symlinks=True)
        os.chdir(copy)
        try:
            yield
        finally:
            os.chdir(source)


def _absolute(directory: str) -> str:
    return str(Path(directory).resolve())


def _run(hook: Callable[..., str], directory: str, *args: Any) -> str:
    target = _absolute(directory)
    with _in_copy():
        return hook(target, *args)


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    metadata = None if metadata_directory is None else _absolute(metadata_directory)
    return _run(_setuptools.build_wheel, wheel_directory, config_settings, metadata)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    return _run(_setuptools.build_sdist, sdist_directory, config_settings)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    return _run(_setuptools.prepare_metadata_for_build_wheel, metadata_directory, config_settings)
