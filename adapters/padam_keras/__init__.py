"""padam_keras: Padam as a Keras 3 optimizer, on the TensorFlow, JAX and PyTorch backends.

>>> from padam_keras import Padam
>>> optimizer = Padam(learning_rate=0.1, partial=0.125)

The update is computed by :func:`padam_core.padam_step`; see :class:`Padam` for the maths.
"""

from padam_keras.optimizer import Padam

__all__ = ["Padam"]
