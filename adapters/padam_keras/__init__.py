"""padam_keras: Padam as a Keras 3 optimizer, on the TensorFlow, JAX and PyTorch backends.

>>> from padam_keras import Padam
>>> optimizer = Padam(learning_rate=0.1, partial=0.125)

The update is computed by :func:`padam_core.padam_step`; see :class:`Padam` for the maths.
:func:`save_state` / :func:`load_state` write and read the Padam state file that padam_torch,
padam_jax and padam_core share (``docs/state-format.md``).

Importing this package registers ``Padam`` with Keras: as ``"padam>Padam"`` (the name saved in
``.keras`` files, so ``keras.models.load_model`` finds it) and as ``"padam"``/``"Padam"`` in
``keras.saving.get_custom_objects()``, so ``model.compile(optimizer="padam")`` builds one with
the defaults. Keras imports the module of a saved class only for its own packages, so a process
that loads a ``.keras`` file must ``import padam_keras`` first (or pass
``custom_objects={"Padam": Padam}``): see docs/keras.md.
"""

import keras

from padam_keras.optimizer import Padam
from padam_keras.state_file import load_state, save_state

__all__ = ["Padam", "load_state", "save_state"]

# keras.optimizers.get("padam") looks the bare name up in the global custom objects (public API:
# keras.saving.get_custom_objects() is that dict); the package-qualified name is not tried.
for _name in ("padam", "Padam"):
    keras.saving.get_custom_objects().setdefault(_name, Padam)
