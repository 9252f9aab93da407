"""padam_torch: Padam as a native ``torch.optim`` optimizer.

>>> import torch
>>> from padam_torch import Padam
>>> model = torch.nn.Linear(3, 1)
>>> optimizer = Padam(model.parameters(), lr=0.1, partial=0.125)

The maths is :func:`padam_core.padam_step`'s; see :class:`Padam` for the arguments.
:func:`save_state` / :func:`load_state` write and read the state file that padam_jax,
padam_keras and padam_core share (``docs/state-format.md``).
"""

from padam_torch.optimizer import Padam, padam
from padam_torch.state_file import load_state, save_state

__all__ = ["Padam", "load_state", "padam", "save_state"]
