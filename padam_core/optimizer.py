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
    DEFAULT_VARIANT,
    DEFAULT_WEIGHT_DECAY,
    validate_hyperparameters,
)
from padam_core.kernel import padam_step
from padam_core.state_file import TensorSpec, read_state_file, write_state_file

__all__ = ["Padam"]

_FORMAT = "padam_core.Padam"
_FORMAT_VERSION = "1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _to_host(array: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    if isinstance(array, np.ndarray):
        return array.copy()
    return array.get()  # CuPy


def _memory_key(array: Any) -> Any:
    """Where an array's data starts (NumPy, CuPy), so one buffer registered twice is caught."""
    interface = getattr(array, "__array_interface__", None) or getattr(
        array, "__cuda_array_interface__", None
    )
    if interface is None or array.size == 0:
        return id(array)
    return (interface["data"][0], tuple(array.shape), interface.get("strides"))


def _is_writable(array: Any) -> bool:
    flags = getattr(array, "flags", None)
    return bool(getattr(flags, "writeable", True))


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
        variant: str = DEFAULT_VARIANT,
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
        seen: dict[Any, str] = {}
        for name, param in self._params.items():
            if not hasattr(param, "__setitem__") or not hasattr(param, "dtype"):
                raise TypeError(f"Parameter {name!r} is not a writable array: {type(param)}")
            xp = array_namespace(param)
            if not xp.isdtype(param.dtype, ("real floating", "complex floating")):
                raise ValueError(
                    f"Parameter {name!r} has dtype {param.dtype} (expected a floating dtype: "
                    "an integer or bool parameter would be truncated)"
                )
            key = _memory_key(param)
            if key in seen:
                raise ValueError(
                    f"Parameter {name!r} is the same array as parameter {seen[key]!r} "
                    "(it would be updated twice per step)"
                )
            seen[key] = name
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
        # A plain float: a NumPy scalar or 0-d array would promote float32 arrays to float64.
        return float(lr) if not isinstance(lr, (int, float)) else lr

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
            if not hasattr(grad, "shape") or not hasattr(grad, "dtype"):
                raise ValueError(f"Gradient for {name!r} is not an array: {type(grad).__name__}")
            if tuple(grad.shape) != tuple(param.shape):
                raise ValueError(
                    f"Gradient for {name!r} has shape {tuple(grad.shape)}, "
                    f"parameter has {tuple(param.shape)}"
                )
            if grad.dtype != param.dtype:
                raise ValueError(
                    f"Gradient for {name!r} has dtype {grad.dtype}, parameter has {param.dtype}"
                )
            if not _is_writable(param):
                raise ValueError(f"Parameter {name!r} is read-only; nothing was updated")
            if self.check_finite:
                xp = array_namespace(grad)
                if not bool(xp.all(xp.isfinite(grad))):
                    raise ValueError(f"Gradient for {name!r} holds NaN or Inf; nothing was updated")
        return {name: named[name] for name in self._names}

    def step(self, grads: Sequence[Any] | Mapping[str, Any]) -> None:
        """One Padam step: every parameter is updated in place from its gradient."""
        # Everything that can fail is checked first (hyperparameters, which are a public dict,
        # gradients, writability), and the pure kernel's results are written only once every
        # array has its result: a step completes for every array or changes nothing.
        validate_hyperparameters(**self.hyperparameters)
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
                pure[name] = padam_step(param, grad, *moments, count, lr=lr, validate=False,
                                        **self.hyperparameters)
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
                # A copy: the in-place step must never write into the caller's arrays.
                loaded[moment][name] = xp.asarray(value, device=device(like), copy=True)
        self.state = PadamState(
            count=int(step),
            exp_avg=loaded["exp_avg"],
            exp_avg_sq=loaded["exp_avg_sq"],
            max_exp_avg_sq=loaded.get("max_exp_avg_sq"),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` without pickle: a ``.safetensors`` path gets the state
        file every adapter reads (``docs/state-format.md``), any other path ``.npz``."""
        if str(path).endswith(".safetensors"):
            moments = {
                moment: None if arrays is None else [_to_host(arrays[name]) for name in self._names]
                for moment in _MOMENTS
                for arrays in [getattr(self.state, moment)]
            }
            lr = self.lr if not callable(self.lr) else repr(self.lr)
            write_state_file(path, step=self.count, **moments, names=self._names,
                             variant=self.hyperparameters["variant"],
                             amsgrad=self.hyperparameters["amsgrad"],
                             hyperparameters={"lr": lr, **self.hyperparameters},
                             writer="padam_core.Padam")  # fmt: skip
            return
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "hyperparameters": json.dumps(self.hyperparameters),
        }
        save_arrays(path, self.state_dict(), meta)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read a state written by :meth:`save`; a file that does not fit raises ``ValueError``
        and leaves the optimizer as it was."""
        if str(path).endswith(".safetensors"):
            specs = [TensorSpec(name, tuple(self._params[name].shape),
                                self.state.exp_avg_sq[name].dtype, self.state.exp_avg[name].dtype)
                     for name in self._names]  # fmt: skip
            loaded = read_state_file(path, expected=specs,
                                     variant=self.hyperparameters["variant"],
                                     amsgrad=self.hyperparameters["amsgrad"])  # fmt: skip
            flat = {"step": np.asarray(loaded.step, dtype=np.int64)}
            for moment in _MOMENTS:
                for name, array in zip(self._names, getattr(loaded, moment) or (), strict=False):
                    flat[f"{moment}/{name}"] = array
            self.load_state_dict(flat)
            return
        expected = {"step": 8} | {
            f"{moment}/{name}": int(arrays[name].nbytes)
            for moment in _MOMENTS
            if (arrays := getattr(self.state, moment)) is not None
            for name in self._names
        }
        flat, meta = load_arrays(path, expected=expected)
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"'{path}' is not a {_FORMAT} state file (version {_FORMAT_VERSION}): "
                f"metadata {meta}"
            )
        self.load_state_dict(flat)
