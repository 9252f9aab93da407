"""A running optimization moves between frameworks through the state file and stays on course.

Train some steps in one framework, save, load into another with the same parameters, continue:
the result matches staying in one framework within docs/numerics.md's cross-framework 1e-5 (float32
inputs, max|x - ref| / max|ref|). Keras legs run in a subprocess (one Keras backend per
process; tests/keras/test_keras_state_file.py runs Keras hand-offs on every backend).
"""

from __future__ import annotations

import pytest

from tests.conformance import handoff
from tests.oracle import Config, gradient_sequence, relative_error

pytest.importorskip("torch")
pytest.importorskip("optax")
pytest.importorskip("safetensors")

STEPS = 100
SHAPES = [(4, 6), (3,)]
CONFIGS = {
    "reference": Config(lr=0.05, weight_decay=0.01, variant="reference"),
    "optax": Config(lr=0.05, weight_decay=0.01, variant="optax", partial=0.3),
    "torch-adam": Config(lr=0.05, weight_decay=0.01, variant="torch", amsgrad=False,
                         decoupled_weight_decay=True),
}  # fmt: skip
LEGS = {"torch": handoff.torch_leg, "jax": handoff.jax_leg, "core": handoff.core_leg}


def make_problem():
    import numpy as np

    rng = np.random.default_rng(0)
    params = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    per_param = [gradient_sequence(SHAPES[0], STEPS, seed=7, kind="spiky"),
                 gradient_sequence(SHAPES[1], STEPS, seed=8, kind="noisy")]  # fmt: skip
    grads = [[g[t].astype(np.float32) for g in per_param] for t in range(STEPS)]
    return params, grads


def assert_close(actual, expected, what):
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        error = relative_error(a, e)
        assert error <= 1e-5, f"{what}, parameter {index}: relative error {error:.3g}"


@pytest.mark.parametrize("variant", CONFIGS)
@pytest.mark.parametrize(
    ("first", "second"), [("torch", "jax"), ("jax", "torch"), ("core", "torch"), ("jax", "core")]
)
def test_handoff_continues_the_single_framework_trajectory(tmp_path, first, second, variant):
    config = CONFIGS[variant]
    params, grads = make_problem()
    path = tmp_path / "state.safetensors"
    middle = LEGS[first](params, grads[:40], config, save=path)
    ended = LEGS[second](middle, grads[40:], config, load=path)
    for name in {first, second}:
        straight = LEGS[name](params, grads, config)
        assert_close(ended, straight, f"{first} -> {second} vs {name} alone ({variant})")


def test_torch_jax_keras_torch_chain_matches_the_torch_run(tmp_path):
    """torch (steps 1-25) -> JAX (26-50) -> Keras, JAX backend (51-75) -> torch (76-100)."""
    params, grads = make_problem()
    variants = ["reference", "optax"]
    after_jax = {}
    for variant in variants:
        config = CONFIGS[variant]
        first = tmp_path / f"{variant}_torch.safetensors"
        after_torch = handoff.torch_leg(params, grads[:25], config, save=first)
        second = tmp_path / f"{variant}_jax.safetensors"
        after_jax[variant] = handoff.jax_leg(after_torch, grads[25:50], config, load=first,
                                             save=second)  # fmt: skip
    jobs = [
        {"params": after_jax[variant], "grads": grads[50:75], "config": CONFIGS[variant],
         "load": tmp_path / f"{variant}_jax.safetensors",
         "save": tmp_path / f"{variant}_keras.safetensors"}
        for variant in variants
    ]  # fmt: skip
    after_keras = handoff.keras_legs(jobs, tmp_path, backend="jax")
    for variant, middle in zip(variants, after_keras, strict=True):
        config = CONFIGS[variant]
        ended = handoff.torch_leg(middle, grads[75:], config,
                                  load=tmp_path / f"{variant}_keras.safetensors")  # fmt: skip
        straight = handoff.torch_leg(params, grads, config)
        assert_close(ended, straight, f"torch -> JAX -> Keras -> torch ({variant})")
