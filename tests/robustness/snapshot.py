"""The one helper every robustness test uses: a rejected call must change no bit of any state.

:func:`snapshot` copies every array reachable from the objects given (optimizers of every
adapter, torch modules, dicts, lists, NamedTuples, plain arrays, Keras variables) as raw bytes;
:func:`assert_unchanged_on_error` runs a call and, if it raises, checks that nothing moved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["assert_unchanged_on_error", "snapshot"]


def _host_bytes(value: Any) -> tuple[str, tuple[int, ...], bytes] | None:
    """(dtype, shape, raw bytes) of an array of any framework, or None if it is not one."""
    module = type(value).__module__
    if module.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            if tensor.is_complex():
                tensor = torch.view_as_real(tensor)
            flat = tensor.contiguous().reshape(-1)
            raw = flat.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            return str(value.dtype), tuple(value.shape), raw
    if hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape"):
        array = np.asarray(value)
        return str(array.dtype), array.shape, np.ascontiguousarray(array).tobytes()
    if module.startswith("keras") and hasattr(value, "numpy") and hasattr(value, "dtype"):
        array = np.asarray(value.numpy())
        return str(array.dtype), array.shape, array.tobytes()
    if isinstance(value, (int, float, bool, str, type(None))):
        return type(value).__name__, (), repr(value).encode()
    return None


def snapshot(*objects: Any) -> list[tuple[str, Any]]:
    """Every array (and number) reachable from ``objects``, as (path, bytes) in a fixed order."""
    seen: set[int] = set()
    found: list[tuple[str, Any]] = []

    def visit(value: Any, path: str, depth: int) -> None:
        if depth > 12:
            return
        leaf = _host_bytes(value)
        if leaf is not None:
            found.append((path, leaf))
            return
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Mapping):
            for key in sorted(value, key=repr):
                visit(value[key], f"{path}[{key!r}]", depth + 1)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{path}[{index}]", depth + 1)
        else:
            _visit_object(value, path, depth, visit)

    for index, value in enumerate(objects):
        visit(value, f"#{index}", 0)
    return found


def _visit_object(value: Any, path: str, depth: int, visit: Callable[..., None]) -> None:
    """Optimizers and modules: their state, params and variables."""
    try:
        import torch

        if isinstance(value, torch.optim.Optimizer):
            visit(value.param_groups, f"{path}.param_groups", depth + 1)
            visit(dict(enumerate(value.state.values())), f"{path}.state", depth + 1)
            return
        if isinstance(value, torch.nn.Module):
            visit(dict(value.state_dict()), f"{path}.state_dict", depth + 1)
            return
    except ImportError:
        pass
    variables = getattr(value, "variables", None)
    if variables is not None and not callable(variables) and type(value).__module__ != "builtins":
        visit(list(variables), f"{path}.variables", depth + 1)  # Keras optimizers and models
        return
    for attribute in ("state", "_params", "hyperparameters", "lr"):
        if hasattr(value, attribute):
            visit(getattr(value, attribute), f"{path}.{attribute}", depth + 1)


def assert_unchanged_on_error(
    call: Callable[[], Any], *objects: Any, match: str | None = None
) -> Any:
    """Run ``call``; if it raises, assert every array of ``objects`` is bitwise as before.

    Returns the call's result, or the exception it raised (so a test can check the message).
    ``match`` (a substring) is required in the message when given.
    """
    before = snapshot(*objects)
    try:
        result = call()
    except Exception as error:  # any rejection must leave the state alone
        after = snapshot(*objects)
        assert [path for path, _ in after] == [path for path, _ in before], "state changed shape"
        changed = [p for (p, a), (_, b) in zip(before, after, strict=True) if a != b]
        assert not changed, f"{type(error).__name__}: {error} -- but these changed: {changed}"
        if match is not None:
            assert match in str(error), f"expected {match!r} in {error!r}"
        return error
    return result
