"""The error a backend raises when a run cannot start, in a module of its own: the runner and
the three backends all import it, and none of them imports another."""

from __future__ import annotations

__all__ = ["SetupError"]


class SetupError(RuntimeError):
    """The run cannot start here: a package or device is missing, an optimizer rejects a value."""
