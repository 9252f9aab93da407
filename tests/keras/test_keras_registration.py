"""How Keras finds Padam by name: ``compile(optimizer="padam")`` and ``load_model`` of a file.

A fresh process that never imports padam_keras cannot load a ``.keras`` file with Padam in it:
Keras imports the module of a saved class only for its own packages (keras, keras_hub, ...).
The test pins that documented limitation, and that ``import padam_keras`` is all it takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from padam_keras import Padam  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_compile_with_the_string_padam_builds_the_default_padam():
    model = _model()
    model.compile(optimizer="padam", loss="mse")
    assert isinstance(model.optimizer, Padam)
    assert model.optimizer.get_config()["partial"] == 0.125
    assert isinstance(keras.optimizers.get("Padam"), Padam)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="name lookup is backend-independent: run it once"
)
def test_load_model_in_a_fresh_process_needs_import_padam_keras(tmp_path):
    model = _model()
    model.compile(optimizer=Padam(learning_rate=0.05), loss="mse")
    model.fit(np.ones((8, 3)), np.ones((8, 2)), verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    script = (
        "import keras\n"
        "try:\n"
        f"    keras.models.load_model({str(path)!r})\n"
        "    print('loaded without import')\n"
        "except TypeError as error:\n"
        "    print('not found:', 'Could not locate class' in str(error))\n"
        f"keras.models.load_model({str(path)!r}, compile=False)\n"
        "print('weights only: loaded')\n"
        "import padam_keras\n"
        f"print(type(keras.models.load_model({str(path)!r}).optimizer).__name__)\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")])}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment,
        timeout=300, check=True,
    )  # fmt: skip
    lines = result.stdout.split("\n")[-4:-1]
    assert lines == ["not found: True", "weights only: loaded", "Padam"], result.stdout
