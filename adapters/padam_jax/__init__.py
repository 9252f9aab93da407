"""padam_jax: Padam (Chen et al., arXiv:1806.06763) as a native optax optimizer.

>>> import optax
>>> from padam_jax import padam
>>> optimizer = padam(learning_rate=0.1, partial=0.125)  # an optax.GradientTransformation

:func:`scale_by_padam` is the bare transformation (state :class:`ScaleByPadamState`, fields
``count``, ``mu``, ``nu``, ``nu_max``) and :func:`padam` the alias that adds the learning rate and
weight decay. The arithmetic is :func:`padam_core.padam_step` run through ``jax.numpy``, so the
numbers equal the other padam adapters'. :func:`state_to_arrays` / :func:`state_from_arrays`
write and read optimizer states without pickle; :func:`save_state` / :func:`load_state` write
and read the Padam state file that padam_torch, padam_keras and padam_core share
(``docs/state-format.md``). ``partial`` may be a :mod:`padam_core.schedules` schedule of the
1-based step count; ``skip_nonfinite=True`` skips (and counts, :func:`skipped_steps`) steps whose
gradients hold a NaN or inf.
"""

from padam_jax.alias import padam
from padam_jax.checkpoint import state_from_arrays, state_to_arrays
from padam_jax.guard import SkipNonfiniteState, skipped_steps
from padam_jax.state_file import load_state, save_state
from padam_jax.transform import ScaleByPadamState, scale_by_padam

__all__ = [
    "ScaleByPadamState",
    "SkipNonfiniteState",
    "load_state",
    "padam",
    "save_state",
    "scale_by_padam",
    "skipped_steps",
    "state_from_arrays",
    "state_to_arrays",
]
