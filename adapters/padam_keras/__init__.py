"""padam_keras: Padam as a Keras 3 optimizer, on the TensorFlow, JAX and PyTorch backends.

>>> from padam_keras import Padam
>>> optimizer = Padam(learning_rate=0.1, partial=0.125)

The update is computed by :func:`padam_core.padam_step`; see :class:`Padam` for the maths.
:func:`save_state` / :func:`load_state` write and read the Padam state file that padam_torch,
padam_jax and padam_core share (``docs/state-format.md``).
"""

from padam_keras.optimizer import Padam
from padam_keras.state_file import load_state, save_state

__all__ = ["Padam", "load_state", "save_state"]
