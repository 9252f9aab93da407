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

``partial`` may be a schedule of the step count, and ``skip_nonfinite=True`` skips (and counts)
a step whose gradients hold NaN or inf:

>>> from padam_core import schedules
>>> optimizer = Padam(weights, partial=schedules.linear(0.5, 0.125, steps=100),
...                   skip_nonfinite=True)
>>> optimizer.step({"w": np.full(3, np.nan), "b": np.asarray(1.0)})
>>> optimizer.count, optimizer.skipped_steps
(0, 1)
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
from padam_core.guard import all_finite
from padam_core.hyperparameters import (
    DEFAULT_B1,
    DEFAULT_B2,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_PARTIAL,
    DEFAULT_VARIANT,
    DEFAULT_WEIGHT_DECAY,
    check_number,
    validate_hyperparameters,
)
from padam_core.kernel import padam_step
from padam_core.schedules import (
    PartialLike,
    Schedule,
    evaluate_partial,
    from_config,
    saved_partial,
    validate_partial,
)
from padam_core.state_file import TensorSpec, read_state_file, write_state_file

__all__ = ["Padam"]

_FORMAT = "padam_core.Padam"
_FORMAT_VERSION = "1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_WRITER = "padam_core.Padam"


def _loaded_partial(saved: Any, where: str) -> Any:
    """The ``partial`` a file recorded: a Schedule rebuilt from its config, else None (the
    optimizer keeps its own number). ``ValueError`` for a config that does not rebuild."""
    if isinstance(saved, Mapping):
        try:
            return from_config(saved)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return None


def _check_skipped(value: Any, where: str) -> int:
    """A recorded ``skipped_steps``: a whole number >= 0."""
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "iu" or int(array) < 0:
        raise ValueError(f"{where}: invalid skipped_steps {value!r} (expected an integer >= 0)")
    return int(array)


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

    ``partial`` is a number in [0, 1/2], a schedule of :mod:`padam_core.schedules`, or any
    callable of the 1-based step count t, evaluated on the host before each step (so a value
    of 1/2, 1/4, 1/8, 1/16 or 0 takes the square-root fast paths, fused or not); a value
    outside [0, 1/2] raises ``ValueError`` naming the step, with nothing changed.

    ``skip_nonfinite=True`` (default False) replaces the ``check_finite`` error by the
    non-finite guard: a step whose gradients hold any NaN or inf changes nothing (parameters,
    moments and :attr:`count` stay bitwise as they were) and adds one to
    :attr:`skipped_steps`. The check is one read of the gradients (compiled,
    :func:`padam_core.fused_cpu.all_finite`, unless ``fused=False``).

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
        partial: PartialLike = DEFAULT_PARTIAL,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
        decoupled_weight_decay: bool = False,
        amsgrad: bool = True,
        maximize: bool = False,
        variant: str = DEFAULT_VARIANT,
        check_finite: bool = True,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        self.hyperparameters: dict[str, Any] = dict(
            b1=b1, b2=b2, eps=eps, partial=partial, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
            variant=variant,
        )  # fmt: skip
        self._validate_hyperparameters()
        if not callable(lr):
            validate_hyperparameters(lr=lr)
        for flag, value in (("check_finite", check_finite), ("skip_nonfinite", skip_nonfinite)):
            if not isinstance(value, bool):
                raise ValueError(f"Invalid {flag} value: {value!r} (expected True or False)")
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"Invalid fused value: {fused!r} (expected None, True or False)")
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
        self.skip_nonfinite = skip_nonfinite
        #: Steps skipped by the non-finite guard (``skip_nonfinite=True``); saved with the state.
        self.skipped_steps: int = 0
        self.state: PadamState = init(self._params, amsgrad=amsgrad)
        if fused is not False and any(isinstance(p, np.ndarray) for p in self._params.values()):
            # The fused path's one-off cost (numba's import, ~0.4 s; `import padam_core` does
            # not pay it) belongs to construction, not to the first step.
            fused_cpu.available()

    def _validate_hyperparameters(self) -> None:
        """The public hyperparameter dict: numbers range-checked, ``partial`` a number or a
        callable (its values are checked at each step)."""
        numbers = {k: v for k, v in self.hyperparameters.items() if k != "partial"}
        validate_hyperparameters(**numbers)
        validate_partial(self.hyperparameters["partial"])

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
            if self.check_finite and not self.skip_nonfinite:
                xp = array_namespace(grad)
                if not bool(xp.all(xp.isfinite(grad))):
                    raise ValueError(f"Gradient for {name!r} holds NaN or Inf; nothing was updated")
        return {name: named[name] for name in self._names}

    def _grads_finite(self, grads: Sequence[Any]) -> bool:
        if self.fused is not False:
            return fused_cpu.all_finite(grads)  # compiled; other arrays through their namespace
        return all(bool(all_finite([grad])) for grad in grads)

    def step(self, grads: Sequence[Any] | Mapping[str, Any]) -> None:
        """One Padam step: every parameter is updated in place from its gradient.

        With ``skip_nonfinite=True`` a step whose gradients hold NaN or inf changes nothing but
        :attr:`skipped_steps` (+1).
        """
        # Everything that can fail is checked first (hyperparameters, which are a public dict,
        # gradients, writability, the schedules' values), and the pure kernel's results are
        # written only once every array has its result: a step completes for every array or
        # changes nothing.
        self._validate_hyperparameters()
        named_grads = self._named_grads(grads)
        lr = self._current_lr()
        count = self.count + 1
        # p on the host, a Python float (t = count, 1-based): the square-root chains of the
        # kernel and the fused loop apply whenever the value is 1/2, 1/4, 1/8 or 1/16.
        partial = check_number(evaluate_partial(self.hyperparameters["partial"], count), "partial")
        hyperparameters = {**self.hyperparameters, "partial": partial}
        if self.skip_nonfinite and not self._grads_finite(list(named_grads.values())):
            self.skipped_steps += 1  # the guard: nothing else changes
            return
        amsgrad = hyperparameters["amsgrad"]
        state = self.state
        fused: list[tuple[Any, ...]] = []  # (param, grad, m, v, v_hat) for one compiled call
        pure: dict[str, Any] = {}
        for name, param in self._params.items():
            grad, max_sq = named_grads[name], state.max_exp_avg_sq
            moments = (
                state.exp_avg[name],
                state.exp_avg_sq[name],
                max_sq[name] if amsgrad and max_sq is not None else None,
            )
            present = [array for array in moments if array is not None]
            if self.fused is not False and fused_cpu.supports(param, grad, *present):
                fused.append((param, grad, *moments))
            else:  # pure: computed now, written after the fused call (nothing written yet)
                pure[name] = padam_step(
                    param, grad, *moments, count, lr=lr, validate=False, **hyperparameters
                )
        if fused:
            params, fused_grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs = map(
                list, zip(*fused, strict=True)
            )
            fused_cpu.multi_tensor_step(
                params, fused_grads, exp_avgs, exp_avg_sqs,
                max_exp_avg_sqs if amsgrad else None, count, lr=lr, **hyperparameters,
            )  # fmt: skip
        for name, result in pure.items():
            self._params[name][...] = result.param
            state.exp_avg[name], state.exp_avg_sq[name] = result.exp_avg, result.exp_avg_sq
            if amsgrad and state.max_exp_avg_sq is not None:
                state.max_exp_avg_sq[name] = result.max_exp_avg_sq
        self.state = state._replace(count=count)

    # ---- state, checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as a flat dict of NumPy arrays: ``step``, ``skipped_steps`` (the guard's
        count) and ``<moment>/<name>``. (A ``partial`` schedule is a hyperparameter: :meth:`save`
        records it, this dict does not.)"""
        flat = {
            "step": np.asarray(self.count, dtype=np.int64),
            "skipped_steps": np.asarray(self.skipped_steps, dtype=np.int64),
        }
        for moment in _MOMENTS:
            arrays = getattr(self.state, moment)
            if arrays is not None:
                flat.update({f"{moment}/{name}": _to_host(arrays[name]) for name in self._names})
        return flat

    def load_state_dict(self, flat: Mapping[str, np.ndarray]) -> None:
        """Load what :meth:`state_dict` returned; ``ValueError`` (state untouched) on a mismatch.

        ``skipped_steps`` is optional (older state dicts have none: the count stays as it is).
        """
        expected = {"step", "skipped_steps"} | {
            f"{moment}/{name}"
            for moment in _MOMENTS
            if getattr(self.state, moment) is not None
            for name in self._names
        }
        missing = sorted(expected - set(flat) - {"skipped_steps"})
        unexpected = sorted(set(flat) - expected)
        if missing or unexpected:
            raise ValueError(
                f"Padam state does not match these parameters: missing entries {missing}, "
                f"unexpected entries {unexpected}"
            )
        step = np.asarray(flat["step"])
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"Invalid 'step' entry: {step!r} (expected a non-negative integer)")
        skipped = (
            _check_skipped(flat["skipped_steps"], "Padam state")
            if "skipped_steps" in flat
            else self.skipped_steps
        )
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
        self.skipped_steps = skipped

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` without pickle: a ``.safetensors`` path gets the state
        file every adapter reads (``docs/state-format.md``), any other path ``.npz``.

        Besides the moments and the step count, both record ``skipped_steps`` and ``partial``
        (a number, or a schedule's config) in their metadata (the state file's free-form
        ``hyperparameters`` entry, which other readers ignore). A plain callable ``partial``
        cannot be recorded: ``ValueError`` before anything is written; use
        :mod:`padam_core.schedules`.
        """
        saved = saved_partial(self.hyperparameters["partial"], f"Cannot save Padam to '{path}'")
        recorded = {
            **self.hyperparameters,
            "partial": saved if isinstance(saved, dict) else float(saved),  # JSON: a float
        }
        if str(path).endswith(".safetensors"):

            def host(arrays: Mapping[str, Any]) -> list[np.ndarray]:
                return [_to_host(arrays[name]) for name in self._names]

            maxima = self.state.max_exp_avg_sq
            lr = self.lr if not callable(self.lr) else repr(self.lr)
            write_state_file(path, step=self.count, exp_avg=host(self.state.exp_avg),
                             exp_avg_sq=host(self.state.exp_avg_sq),
                             max_exp_avg_sq=None if maxima is None else host(maxima),
                             names=self._names,
                             variant=self.hyperparameters["variant"],
                             amsgrad=self.hyperparameters["amsgrad"],
                             hyperparameters={"lr": lr, **recorded,
                                              "skipped_steps": self.skipped_steps},
                             writer=_WRITER)  # fmt: skip
            return
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "hyperparameters": json.dumps(recorded),
        }
        save_arrays(path, self.state_dict(), meta)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read a state written by :meth:`save`; a file that does not fit raises ``ValueError``
        and leaves the optimizer as it was.

        The moments, the step count and ``skipped_steps`` are replaced; a ``partial`` schedule
        the file recorded replaces this optimizer's ``partial`` (its position is the step
        count, which is part of the state). Every other hyperparameter, and a ``partial``
        the file recorded as a number, stays this optimizer's own. A state file written by
        another framework's adapter brings moments and step count only (its recorded
        hyperparameters are ignored, as ``docs/state-format.md`` says).
        """
        if str(path).endswith(".safetensors"):
            specs = [TensorSpec(name, tuple(self._params[name].shape),
                                self.state.exp_avg_sq[name].dtype, self.state.exp_avg[name].dtype)
                     for name in self._names]  # fmt: skip
            loaded = read_state_file(path, expected=specs,
                                     variant=self.hyperparameters["variant"],
                                     amsgrad=self.hyperparameters["amsgrad"])  # fmt: skip
            flat = {"step": np.asarray(loaded.step, dtype=np.int64)}
            partial = None
            if loaded.writer == _WRITER:  # our own file: its extras are ours to restore
                where = f"Cannot read Padam state from '{path}'"
                recorded = loaded.hyperparameters
                partial = _loaded_partial(recorded.get("partial"), where)
                if "skipped_steps" in recorded:
                    flat["skipped_steps"] = np.asarray(
                        _check_skipped(recorded["skipped_steps"], where), dtype=np.int64
                    )
            for moment in _MOMENTS:
                for name, array in zip(self._names, getattr(loaded, moment) or (), strict=False):
                    flat[f"{moment}/{name}"] = array
            self._load(flat, partial)
            return
        expected = {"step": 8, "skipped_steps": 8} | {
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
        where = f"Cannot read Padam state from '{path}'"
        try:
            recorded = json.loads(meta.get("hyperparameters", "{}"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: malformed hyperparameters ({error})") from None
        recorded_partial = recorded.get("partial") if isinstance(recorded, dict) else None
        partial = _loaded_partial(recorded_partial, where)
        self._load(flat, partial)

    def _load(self, flat: Mapping[str, np.ndarray], partial: Schedule | None) -> None:
        """load_state_dict (which checks everything before it assigns), then the schedule
        (already rebuilt: nothing left to fail)."""
        self.load_state_dict(flat)
        if partial is not None:
            self.hyperparameters["partial"] = partial
