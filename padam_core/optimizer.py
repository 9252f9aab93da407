"""A stateful Padam for NumPy and CuPy arrays that updates them in place.

>>> import numpy as np
>>> from padam_core import Padam
>>> weights = {"w": np.ones(3), "b": np.zeros(())}
>>> optimizer = Padam(weights, lr=0.1)
>>> optimizer.step({"w": np.full(3, 0.5), "b": np.asarray(1.0)})
>>> optimizer.count, bool(weights["w"][0] < 1.0)
(1, True)
>>> optimizer.save("/tmp/padam_state.npz")  # no pickle: npz or .safetensors
>>> Padam(weights, lr=0.1).load("/tmp/padam_state.npz")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from padam_core import fused_cpu
from padam_core.checkpoint import load_arrays, save_arrays
from padam_core.functional import PadamState, init
from padam_core.hyperparameters import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_WEIGHT_DECAY,
    validate_hyperparameters,
)
from padam_core.kernel import padam_step

__all__ = ["Padam"]

_FORMAT = "padam_core.Padam"
_FORMAT_VERSION = "1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _to_host(array: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    if isinstance(array, np.ndarray):
        return array.copy()
    return array.get()  # CuPy


class Padam:
    """Padam over a list or dict of NumPy/CuPy arrays, updated in place by :meth:`step`.

    The maths is :func:`padam_core.padam_step` (see :mod:`padam_core.kernel`). ``lr`` may be a
    float or a schedule ``lr(step) -> float`` called with the 1-based step count. With
    ``check_finite=True`` (default) a gradient holding NaN or Inf is rejected before anything
    changes; set it to False to save that pass over the gradients.

    ``fused=None`` (default) takes the numba-compiled in-place path of
    :mod:`padam_core.fused_cpu` where it applies (numba installed, contiguous NumPy float32/float64
    arrays, or float16/bfloat16 ones with float32 state), all of them in one compiled call, and
    the pure kernel elsewhere; ``False`` always takes the pure kernel. Both give the
    same bits, but for a general ``partial`` (pow) where they may differ in the last place.

    A step either completes for every array or changes nothing: shapes, dtypes and finiteness are
    checked for all gradients before the first array is written.
    """

    def __init__(
        self,
        params: Sequence[Any] | Mapping[str, Any],
        *,
        lr: float | Callable[[int], float] = DEFAULT_LR,
        b1: float = DEFAULT_B1,
        b2: float = DEFAULT_B2,
        eps: float = DEFAULT_EPS,
        partial: float = DEFAULT_PARTIAL,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
        decoupled_weight_decay: bool = False,
        amsgrad: bool = True,
        maximize: bool = False,
        variant: str = "reference",
        check_finite: bool = True,
        fused: bool | None = None,
    ) -> None:
        self.hyperparameters: dict[str, Any] = dict(
            b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
            variant=variant,
        )  # fmt: skip
        validate_hyperparameters(**self.hyperparameters, **({} if callable(lr) else {"lr": lr}))
        if isinstance(params, Mapping):
            self._names = [str(name) for name in params]
            self._params = dict(params)
        elif isinstance(params, Sequence) and not hasattr(params, "shape"):
            self._names = [str(index) for index in range(len(params))]
            self._params = dict(zip(self._names, params, strict=True))
        else:
            raise TypeError("params must be a list or a dict of arrays")
        for name, param in self._params.items():
            if not hasattr(param, "__setitem__") or not hasattr(param, "dtype"):
                raise TypeError(f"Parameter {name!r} is not a writable array: {type(param)}")
        self.lr = lr
        self.check_finite = check_finite
        self.fused = fused
        self.state: PadamState = init(self._params, amsgrad=amsgrad)

    @property
    def count(self) -> int:
        """The number of steps taken."""
        return int(self.state.count)

    def _current_lr(self) -> float:
        lr = self.lr(self.count + 1) if callable(self.lr) else self.lr
        validate_hyperparameters(lr=lr)
        return lr

    def _named_grads(self, grads: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(grads, Mapping):
            named = {str(name): grad for name, grad in grads.items()}
        else:
            if len(grads) != len(self._names):
                raise ValueError(f"Expected {len(self._names)} gradients, got {len(grads)}")
            named = dict(zip(self._names, grads, strict=True))
        if set(named) != set(self._names):
            missing = sorted(set(self._names) - set(named))
            unexpected = sorted(set(named) - set(self._names))
            raise ValueError(f"Gradient names differ: missing {missing}, unexpected {unexpected}")
        for name in self._names:
            param, grad = self._params[name], named[name]
            if tuple(grad.shape) != tuple(param.shape):
                raise ValueError(
                    f"Gradient for {name!r} has shape {tuple(grad.shape)}, "
                    f"parameter has {tuple(param.shape)}"
                )
            if grad.dtype != param.dtype:
                raise ValueError(
                    f"Gradient for {name!r} has dtype {grad.dtype}, parameter has {param.dtype}"
                )
            if self.check_finite:
                xp = array_namespace(grad)
                if not bool(xp.all(xp.isfinite(grad))):
                    raise ValueError(f"Gradient for {name!r} holds NaN or Inf; nothing was updated")
        return {name: named[name] for name in self._names}

    def step(self, grads: Sequence[Any] | Mapping[str, Any]) -> None:
        """One Padam step: every parameter is updated in place from its gradient."""
        named_grads = self._named_grads(grads)
        lr = self._current_lr()
        count = self.count + 1
        amsgrad = self.hyperparameters["amsgrad"]
        state = self.state
        fused: list[tuple[Any, ...]] = []  # (param, grad, m, v, v_hat) for one compiled call
        pure: dict[str, Any] = {}
        for name, param in self._params.items():
            grad, max_sq = named_grads[name], state.max_exp_avg_sq
            moments = (
                state.exp_avg[name],
                state.exp_avg_sq[name],
                max_sq[name] if amsgrad else None,
            )
            present = [array for array in moments if array is not None]
            if self.fused is not False and fused_cpu.supports(param, grad, *present):
                fused.append((param, grad, *moments))
            else:  # pure: computed now, written after the fused call (nothing written yet)
                pure[name] = padam_step(param, grad, *moments, count, lr=lr, **self.hyperparameters)
        if fused:
            params, fused_grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs = map(
                list, zip(*fused, strict=True)
            )
            fused_cpu.multi_tensor_step(
                params, fused_grads, exp_avgs, exp_avg_sqs,
                max_exp_avg_sqs if amsgrad else None, count, lr=lr, **self.hyperparameters,
            )  # fmt: skip
        for name, result in pure.items():
            self._params[name][...] = result.param
            state.exp_avg[name], state.exp_avg_sq[name] = result.exp_avg, result.exp_avg_sq
            if amsgrad:
                state.max_exp_avg_sq[name] = result.max_exp_avg_sq
        self.state = state._replace(count=count)

    # ---- state, checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as a flat dict of NumPy arrays: ``step`` and ``<moment>/<name>``."""
        flat = {"step": np.asarray(self.count, dtype=np.int64)}
        for moment in _MOMENTS:
            arrays = getattr(self.state, moment)
            if arrays is not None:
                flat.update({f"{moment}/{name}": _to_host(arrays[name]) for name in self._names})
        return flat

    def load_state_dict(self, flat: Mapping[str, np.ndarray]) -> None:
        """Load what :meth:`state_dict` returned; ``ValueError`` (state untouched) on a mismatch."""
        expected = {"step"} | {
            f"{moment}/{name}"
            for moment in _MOMENTS
            if getattr(self.state, moment) is not None
            for name in self._names
        }
        missing, unexpected = sorted(expected - set(flat)), sorted(set(flat) - expected)
        if missing or unexpected:
            raise ValueError(
                f"Padam state does not match these parameters: missing entries {missing}, "
                f"unexpected entries {unexpected}"
            )
        step = np.asarray(flat["step"])
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"Invalid 'step' entry: {step!r} (expected a non-negative integer)")
        loaded: dict[str, dict[str, Any]] = {}
        for moment in _MOMENTS:
            current = getattr(self.state, moment)
            if current is None:
                continue
            loaded[moment] = {}
            for name in self._names:
                key, like = f"{moment}/{name}", current[name]
                value = np.asarray(flat[key])
                if tuple(value.shape) != tuple(like.shape) or value.dtype != like.dtype:
                    raise ValueError(
                        f"Entry {key!r} has shape {value.shape} and dtype {value.dtype}, "
                        f"expected {tuple(like.shape)} and {like.dtype}"
                    )
                finite = np.isfinite(value).all()
                if not finite or (moment != "exp_avg" and (value < 0).any()):
                    raise ValueError(f"Entry {key!r} holds invalid values (non-finite or < 0)")
                xp = array_namespace(like)
                loaded[moment][name] = xp.asarray(value, device=device(like))
        self.state = PadamState(
            count=int(step),
            exp_avg=loaded["exp_avg"],
            exp_avg_sq=loaded["exp_avg_sq"],
            max_exp_avg_sq=loaded.get("max_exp_avg_sq"),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` (``.npz``, or ``.safetensors`` by suffix), without pickle."""
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "hyperparameters": json.dumps(self.hyperparameters),
        }
        save_arrays(path, self.state_dict(), meta)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read a state written by :meth:`save`; a file that does not fit raises ``ValueError``
        and leaves the optimizer as it was."""
        flat, meta = load_arrays(path)
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"'{path}' is not a {_FORMAT} state file (version {_FORMAT_VERSION}): "
                f"metadata {meta}"
            )
        self.load_state_dict(flat)
