"""padam_torch: Padam as a native ``torch.optim`` optimizer.

>>> import torch
>>> from padam_torch import Padam
>>> model = torch.nn.Linear(3, 1)
>>> optimizer = Padam(model.parameters(), lr=0.1, partial=0.125)

The maths is :func:`padam_core.padam_step`'s; see :class:`Padam` for the arguments.
"""

from padam_torch.optimizer import Padam, padam

__all__ = ["Padam", "padam"]
