"""JAX tests compare float64 trajectories with NumPy's, so 64-bit JAX must be on.

The root ``tests/conftest.py`` enables it for the whole run; doing it here too keeps
``pytest tests/jax`` correct on its own. It must happen before any array is created.
"""

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

jax.config.update("jax_enable_x64", True)
