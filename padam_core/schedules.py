"""Schedules for the partial exponent p: a callable of the 1-based step count t.

Every ``partial`` argument of padam (padam_core, padam_torch, padam_jax, padam_keras) takes a
number, one of these schedules, or any callable of the step count. A schedule works on a Python
int (returning a Python float, so the square-root fast paths of
:func:`padam_core.partial_power` apply whenever the value allows it) and on a 0-d array count
(traced under ``jit``, a tensor under ``torch.compile``), returning a 0-d array. Its arguments
are checked at construction, every value lies in [0, 1/2], and it describes itself: ``repr``
and a JSON-serializable :meth:`Schedule.get_config` that :func:`from_config` turns back into an
equal schedule (torch's ``state_dict``, Keras's ``.keras`` files and padam_core's state files
store that config).

>>> p = linear(0.5, 0.125, steps=1000)   # Adam-like at t = 1, Padam's 1/8 from t = 1001 on
>>> p(1), p(501), p(1001), p(5000)
(0.5, 0.3125, 0.125, 0.125)
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from array_api_compat import array_namespace

from padam_core.hyperparameters import check_number, validate_hyperparameters

__all__ = [
    "PartialLike",
    "Schedule",
    "constant",
    "cosine",
    "evaluate_partial",
    "from_config",
    "is_schedule",
    "linear",
    "piecewise",
    "saved_partial",
    "validate_partial",
]

Array = Any
#: What a ``partial`` argument accepts: a number, a schedule, or a callable of the step count.
PartialLike = float | Callable[[Any], Any]


def _is_python_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_p(value: Any, shown: str) -> float:
    """A concrete p in [0, 1/2], as a float (the error names ``shown``)."""
    check_number(value, shown)  # type errors (bool, str, arrays of several numbers, ...)
    validate_hyperparameters({"partial": shown}, partial=value)
    return float(value)


def _check_steps(value: Any, shown: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Invalid {shown} value: {value!r} (expected a whole number >= 1)")
    return int(value)


def _float_count(count: Array, xp: Any) -> Array:
    """The step count as a 0-d floating array (an integer count becomes float32)."""
    if xp.isdtype(count.dtype, "real floating"):
        return count
    return xp.astype(count, xp.float32)


class Schedule(ABC):
    """A schedule of p: ``schedule(t)`` for the 1-based step count t (a Python int or an array).

    Subclasses set ``kind`` (the name in the config) and implement :meth:`_number` (Python
    step) and :meth:`_array` (array step, any array API namespace).
    """

    kind: ClassVar[str]

    def __call__(self, count: Any, *, xp: Any = None) -> Any:
        """p at step ``count`` (1 on the first step); ``xp``: the namespace of an array count,
        found from the array when omitted (Keras passes its backend's shim)."""
        if _is_python_number(count):
            return self._number(float(count))
        if xp is None:
            xp = array_namespace(count)
        return self._array(_float_count(count, xp), xp)

    @abstractmethod
    def _number(self, t: float) -> float: ...

    @abstractmethod
    def _array(self, t: Array, xp: Any) -> Array: ...

    @abstractmethod
    def _arguments(self) -> dict[str, Any]: ...

    def get_config(self) -> dict[str, Any]:
        """A JSON-serializable description; :func:`from_config` rebuilds the schedule."""
        return {"schedule": self.kind, **self._arguments()}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self._arguments().items())
        return f"{self.kind}({arguments})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(self))

    # optax's StatefulSchedule protocol (init / update / __call__ of a state), so that
    # ``optax.inject_hyperparams(padam_jax.padam)(partial=schedule)`` evaluates p at the same t
    # as ``padam_jax.padam(partial=schedule)``: inject_hyperparams calls a plain callable with
    # its own 0-based count, one step early for a schedule of the 1-based t. Here the state is t.
    def init(self) -> Any:
        """optax protocol: the state before the first step, t = 1 (an int32 0-d array)."""
        try:  # only optax calls this, so JAX is there: a JAX array, as a jitted step returns
            import jax.numpy as jnp  # (a NumPy one would make jit compile the step twice)
        except ImportError:
            return np.ones((), np.int32)
        return jnp.ones((), jnp.int32)

    def update(self, state: Any, **extra_args: Any) -> Any:
        """optax protocol: the state of the next step, t + 1."""
        del extra_args
        return state + 1


class _Constant(Schedule):
    kind = "constant"

    def __init__(self, value: float) -> None:
        self.value = _check_p(value, "constant value")

    def _number(self, t: float) -> float:
        return self.value

    def _array(self, t: Array, xp: Any) -> Array:
        return t * 0.0 + self.value  # a 0-d array of t's dtype and device

    def _arguments(self) -> dict[str, Any]:
        return {"value": self.value}


class _Ramp(Schedule):
    """start -> end over ``steps`` steps: p(1) = start, p(t) = end for t > steps."""

    def __init__(self, start: float, end: float, steps: int) -> None:
        self.start = _check_p(start, f"{self.kind} start")
        self.end = _check_p(end, f"{self.kind} end")
        self.steps = _check_steps(steps, f"{self.kind} steps")

    def _arguments(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "steps": self.steps}

    def _number(self, t: float) -> float:
        fraction = min(max(t - 1.0, 0.0), self.steps) / self.steps
        return self.end if fraction == 1.0 else self._shape(fraction, math.cos)

    def _array(self, t: Array, xp: Any) -> Array:
        fraction = xp.clip(t - 1.0, min=0.0, max=float(self.steps)) / float(self.steps)
        # The end value exactly once the ramp is over (so p = 1/8 keeps its square-root chain).
        return xp.where(fraction >= 1.0, t * 0.0 + self.end, self._shape(fraction, xp.cos))

    @abstractmethod
    def _shape(self, fraction: Any, cos: Callable[[Any], Any]) -> Any: ...


class _Linear(_Ramp):
    kind = "linear"

    def _shape(self, fraction: Any, cos: Callable[[Any], Any]) -> Any:
        return self.start + (self.end - self.start) * fraction


class _Cosine(_Ramp):
    kind = "cosine"

    def _shape(self, fraction: Any, cos: Callable[[Any], Any]) -> Any:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + cos(math.pi * fraction))


class _Piecewise(Schedule):
    """``values[i]`` for ``boundaries[i-1] < t <= boundaries[i]`` (t 1-based)."""

    kind = "piecewise"

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        if isinstance(boundaries, str | bytes) or not isinstance(boundaries, Sequence):
            raise ValueError(f"Invalid piecewise boundaries: {boundaries!r} (expected a list)")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise ValueError(f"Invalid piecewise values: {values!r} (expected a list)")
        self.boundaries = [_check_steps(b, "piecewise boundary") for b in boundaries]
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError(
                f"Invalid piecewise boundaries: {list(boundaries)!r} (expected strictly increasing)"
            )
        if len(values) != len(self.boundaries) + 1:
            raise ValueError(
                f"piecewise needs one more value than boundaries: got {len(values)} values for "
                f"{len(self.boundaries)} boundaries"
            )
        self.values = [_check_p(v, "piecewise value") for v in values]

    def _arguments(self) -> dict[str, Any]:
        return {"boundaries": list(self.boundaries), "values": list(self.values)}

    def _number(self, t: float) -> float:
        for boundary, value in zip(self.boundaries, self.values, strict=False):
            if t <= boundary:
                return value
        return self.values[-1]

    def _array(self, t: Array, xp: Any) -> Array:
        result = t * 0.0 + self.values[-1]
        for boundary, value in reversed(list(zip(self.boundaries, self.values, strict=False))):
            result = xp.where(t <= float(boundary), t * 0.0 + value, result)
        return result


def constant(value: float) -> Schedule:
    """p = ``value`` at every step."""
    return _Constant(value)


def linear(start: float, end: float, steps: int) -> Schedule:
    """p from ``start`` at t = 1 linearly to ``end`` at t = steps + 1, then ``end``."""
    return _Linear(start, end, steps)


def cosine(start: float, end: float, steps: int) -> Schedule:
    """p from ``start`` at t = 1 along half a cosine to ``end`` at t = steps + 1, then ``end``."""
    return _Cosine(start, end, steps)


def piecewise(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """p = ``values[0]`` for t <= ``boundaries[0]``, ``values[1]`` up to ``boundaries[1]``, ...,
    ``values[-1]`` after the last boundary (step counts are 1-based, boundaries increasing)."""
    return _Piecewise(boundaries, values)


_KINDS: dict[str, type[Schedule]] = {
    kind.kind: kind for kind in (_Constant, _Linear, _Cosine, _Piecewise)
}


def from_config(config: Mapping[str, Any]) -> Schedule:
    """The schedule a :meth:`Schedule.get_config` describes (clear ``ValueError`` otherwise)."""
    if not isinstance(config, Mapping) or config.get("schedule") not in _KINDS:
        raise ValueError(
            f"Invalid partial schedule config: {config!r} (expected a mapping with 'schedule' "
            f"one of {sorted(_KINDS)})"
        )
    arguments = {key: value for key, value in config.items() if key != "schedule"}
    try:
        return _KINDS[config["schedule"]](**arguments)
    except TypeError as error:  # missing or unknown arguments
        raise ValueError(f"Invalid partial schedule config: {config!r} ({error})") from None


def is_schedule(partial: Any) -> bool:
    """Whether ``partial`` is a schedule (a callable of the step count), not a number or array."""
    return callable(partial) and not hasattr(partial, "dtype")


def saved_partial(partial: Any, where: str) -> Any:
    """``partial`` as a config or file stores it: a number as it is, a :class:`Schedule` as its
    config; a plain callable has no config and is refused (``ValueError`` starting ``where``)."""
    if isinstance(partial, Schedule):
        return partial.get_config()
    if is_schedule(partial):
        raise ValueError(
            f"{where}: partial={partial!r} is a plain callable, which cannot be saved; use a "
            "schedule from padam_core.schedules (constant, linear, cosine, piecewise), which "
            "saves as its config"
        )
    return partial


def validate_partial(partial: Any, shown: str = "partial") -> None:
    """A ``partial`` argument: a number in [0, 1/2] (or a 1-element array), or a callable."""
    if is_schedule(partial):
        return
    validate_hyperparameters({"partial": shown}, partial=partial)


def evaluate_partial(
    partial: Any, step: Any, *, xp: Any = None, shown: str = "partial", traced: bool | None = None
) -> Any:
    """The value of p for step ``step``: ``partial`` itself, or the schedule/callable at ``step``.

    A concrete value a callable returns is range-checked (``ValueError`` naming the step), so a
    bad user schedule fails before any state changes; a traced value (under ``jit``; ``traced``
    from an adapter that knows, e.g. under ``torch.compile``) is not read.
    """
    if not is_schedule(partial):
        return partial
    value = partial(step, xp=xp) if isinstance(partial, Schedule) else partial(step)
    try:
        validate_hyperparameters({"partial": shown}, traced=traced, partial=value)
    except ValueError as error:
        raise ValueError(f"{shown} schedule {partial!r} at step {step!r}: {error}") from None
    return value
