"""The oracle itself, pinned: the closed form of step 1 (numerics.md) and golden trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest

import padam_core
from tests.core.helpers import run_kernel
from tests.oracle import Config, oracle_trajectory


@pytest.mark.parametrize("amsgrad", [True, False])
@pytest.mark.parametrize("partial", [0.0, 0.0625, 0.125, 0.25, 0.3, 0.5])
def test_oracle_step_one_matches_closed_form(partial, amsgrad):
    # docs/numerics.md: theta1 = theta0 - a (1-b2)^(1/2-p) g / (|g| + eps / sqrt(1-b2))^(2p)
    config = Config(partial=partial, amsgrad=amsgrad, lr=0.05, eps=1e-3)
    theta0 = np.array([0.5, -1.0, 2.0, 0.0])
    g = np.array([0.3, -2.0, 1e-4, 0.0])
    expected = theta0 - config.lr * (1 - config.b2) ** (0.5 - partial) * g / (
        np.abs(g) + config.eps / math.sqrt(1 - config.b2)
    ) ** (2 * partial)
    np.testing.assert_allclose(oracle_trajectory(theta0, [g], config)[0], expected, rtol=1e-13)


# theta0 = [1, -2], g_t = [4 cos(t) / t^2, sin(t) / 2] for t = 1..5 (shrinking, so amsgrad
# matters at step 5), weight decay 0.01 (coupled), p = 1/8. Computed once with the oracle and
# pinned here, so that a change to the oracle or the kernel cannot go unnoticed.
GRADS = [np.array([4.0 / t**2 * math.cos(t), 0.5 * math.sin(t)]) for t in range(1, 6)]
GOLDEN = {
    ("reference", True): [
        [0.9865869902396287, -2.0037769677007993],
        [0.979501360959324, -2.0088383222072355],
        [0.9757346736746703, -2.0130212783894788],
        [0.9731987680375873, -2.0144010762954236],
        [0.9708723789118081, -2.0133948748302015],
    ],
    ("reference", False): [
        [0.9865869902396287, -2.0037769677007993],
        [0.979501360959324, -2.0088383222072355],
        [0.9757346736746703, -2.0130212783894788],
        [0.9731987680375873, -2.0144010762954236],
        [0.9708722622241254, -2.0133948748302015],
    ],
    ("torch", True): [
        [0.8211346351080402, -2.05036668307932],
        [0.7483408749609183, -2.1023986749781414],
        [0.7151935566800118, -2.139299331049424],
        [0.69524672554949, -2.150151422574856],
        [0.6784700298813845, -2.142699339280576],
    ],
    ("torch", False): [
        [0.8211346351080402, -2.05036668307932],
        [0.7483408749609183, -2.1023986749781414],
        [0.7151935566800118, -2.139299331049424],
        [0.69524672554949, -2.150151422574856],
        [0.678469063944929, -2.142699339280576],
    ],
    ("optax", True): [
        [0.8211346351080402, -2.05036668307932],
        [0.7540962736185748, -2.1023986749781414],
        [0.7249414143881401, -2.137504270441486],
        [0.7080050854019063, -2.147942484659112],
        [0.694149060216876, -2.1406162921678127],
    ],
    ("optax", False): [
        [0.8211346351080402, -2.05036668307932],
        [0.7483408749609183, -2.1023986749781414],
        [0.7151935566800118, -2.139299331049424],
        [0.69524672554949, -2.150151422574856],
        [0.678469063944929, -2.142699339280576],
    ],
}


@pytest.mark.parametrize(("variant", "amsgrad"), list(GOLDEN))
def test_oracle_and_kernel_reproduce_golden_trajectories(variant, amsgrad):
    config = Config(variant=variant, amsgrad=amsgrad, weight_decay=0.01)
    theta0 = np.array([1.0, -2.0])
    expected = np.array(GOLDEN[variant, amsgrad])
    np.testing.assert_allclose(oracle_trajectory(theta0, GRADS, config), expected, rtol=1e-14)
    kernel = run_kernel(padam_core.kernel.array_namespace(theta0), theta0, GRADS, config, None)
    np.testing.assert_allclose(kernel, expected, rtol=1e-13)


def test_golden_trajectories_tell_variants_and_amsgrad_apart():
    rows = {key: np.array(value) for key, value in GOLDEN.items()}
    assert not np.allclose(rows["reference", True], rows["reference", False], rtol=1e-9)
    assert not np.allclose(rows["torch", True], rows["optax", True], rtol=1e-9)
