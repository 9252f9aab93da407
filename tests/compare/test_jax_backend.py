"""``padam compare --framework jax``: optax baselines and padam_jax in a plain-JAX loop."""

from __future__ import annotations

import csv
import math

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("padam_jax")

from padam_compare.cli import main
from padam_compare.config import build_config
from padam_compare.runner import run_comparison

TINY = {
    "epochs": 2,
    "train_size": 128,
    "test_size": 64,
    "progress": False,
    "seeds": [0],
    "dataset": "digits",
    "model": "mlp",
    "framework": "jax",
    "batch_size": 32,
}


def test_jax_end_to_end_writes_every_file(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "compare",
        "--framework",
        "jax",
        "--epochs",
        "2",
        "--train-size",
        "128",
        "--test-size",
        "64",
        "--batch-size",
        "64",
        "--seeds",
        "0",
        "1",
        "--no-progress",
        "--optimizers",
        "sgd",
        "padam",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    assert "mnist1d · cnn1d · jax" in capsys.readouterr().out
    with (out / "epochs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 2
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)
    assert (out / "curves.png").stat().st_size > 10_000


def test_jax_padam_at_one_half_optax_variant_is_optax_amsgrad():
    """numerics.md: Padam p=1/2 optax-style = optax.amsgrad; through the whole loop, same seed."""
    config = build_config(
        flag_values={**TINY, "optimizers": ["amsgrad", "padam"], "partials": [0.5]},
        optimizer_overrides={"padam": {"lr": 0.001, "variant": "optax"}},
    )
    amsgrad, padam = run_comparison(config).runs
    for a, p in zip(amsgrad.epochs, padam.epochs, strict=True):
        assert p.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        assert p.test_loss == pytest.approx(a.test_loss, rel=1e-5)


def test_jax_schedule_divides_the_lr_at_the_milestones():
    config = build_config(
        flag_values={**TINY, "epochs": 3, "milestones": [1, 2], "optimizers": ["sgd"]}
    )
    (run,) = run_comparison(config).runs
    assert [record.lr for record in run.epochs] == pytest.approx([0.1, 0.01, 0.001])


def test_jax_has_no_cifar_networks_yet(cifar10_dir, capsys):
    directory, _ = cifar10_dir
    code = main(
        [
            "compare",
            "--framework",
            "jax",
            "--preset",
            "paper-resnet18",
            "--data-dir",
            str(directory),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "resnet18 is torch only for now" in capsys.readouterr().err


def _torch_weights_into_flax(torch_model, params):
    """The torch network's weights in the flax module's parameter tree (same architecture)."""
    import numpy as np

    tensors = [t.detach().numpy() for t in torch_model.parameters()]
    new = {name: dict(leaves) for name, leaves in params.items()}
    order = []  # torch's parameter order: conv0, bn0, conv1, bn1, ..., dense / dense0..2
    for index in range(3):
        if f"conv{index}" in params:
            order += [(f"conv{index}", "kernel"), (f"bn{index}", "scale"), (f"bn{index}", "bias")]
    order += [("dense", "kernel"), ("dense", "bias")] if "dense" in params else []
    for index in range(3):
        if f"dense{index}" in params:
            order += [(f"dense{index}", "kernel"), (f"dense{index}", "bias")]
    assert len(order) == len(tensors)
    for (layer, leaf), array in zip(order, tensors, strict=True):
        if leaf == "kernel":
            array = array.transpose(2, 1, 0) if array.ndim == 3 else array.T
        assert new[layer][leaf].shape == array.shape, (layer, leaf)
        new[layer][leaf] = np.asarray(array)
    return new


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_jax_networks_are_the_torch_networks(name):
    """Same weights -> same logits and batch-norm running means as torch, training and eval."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from padam_compare.jax_backend import JAX_MODELS, apply_model, init_model
    from padam_compare.torch_models import build_model

    input_shape = (40,) if name == "cnn1d" else (8, 8)
    torch.manual_seed(0)
    torch_model = build_model(name, input_shape, 10)
    model = JAX_MODELS[name](input_shape, 10)
    params, state = init_model(model, jax.random.PRNGKey(0), input_shape)
    params = _torch_weights_into_flax(torch_model, params)
    x = np.random.default_rng(0).standard_normal((16, *input_shape)).astype(np.float32)

    torch_model.train()
    expected = torch_model(torch.from_numpy(x)).detach().numpy()
    logits, state = apply_model(model, params, state, jnp.asarray(x), True)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)

    batch_norms = [m for m in torch_model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(batch_norms) == len(state.get("batch_stats", {})) == (3 if name == "cnn1d" else 0)
    for index, bn in enumerate(batch_norms):
        stats = state["batch_stats"][f"bn{index}"]
        np.testing.assert_allclose(stats["mean"], bn.running_mean.numpy(), rtol=1e-4, atol=1e-6)
        # flax's running variance takes the biased batch variance, torch's the unbiased one.
        count = 16 * (40, 20, 10)[index]  # values per channel: batch x length
        unbiased = (bn.running_var.numpy() - 0.9) / 0.1  # torch: 0.9 * 1 + 0.1 * unbiased
        expected_var = 0.9 + 0.1 * unbiased * (count - 1) / count
        np.testing.assert_allclose(stats["var"], expected_var, rtol=1e-5)

    torch_model.eval()
    expected = torch_model(torch.from_numpy(x)).detach().numpy()
    logits, _ = apply_model(model, params, state, jnp.asarray(x), False)
    # Off by the variance factor n/(n-1) above (n >= 160 here), on the running average only.
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_jax_networks_draw_torch_initialization(name):
    """Every weight and bias uniform in +-1/sqrt(fan_in) (torch's default), BN at 1 and 0."""
    import jax
    import numpy as np

    from padam_compare.jax_backend import JAX_MODELS, init_model

    input_shape = (40,) if name == "cnn1d" else (8, 8)
    model = JAX_MODELS[name](input_shape, 10)
    params, state = init_model(model, jax.random.PRNGKey(1), input_shape)
    fan_ins = {"dense0": 64, "dense1": 128, "dense2": 128, "conv0": 5, "conv1": 96, "conv2": 96}
    fan_ins["dense"] = 32 * 10
    for layer, leaves in params.items():
        for leaf, value in leaves.items():
            value = np.asarray(value)
            if layer.startswith("bn"):
                assert np.all(value == (1.0 if leaf == "scale" else 0.0))
                continue
            bound = 1 / np.sqrt(fan_ins[layer])
            assert np.abs(value).max() <= bound
            if value.size >= 100:  # uniform, not normal: the spread reaches the bound
                assert np.abs(value).max() > 0.9 * bound
                assert np.std(value) == pytest.approx(bound / np.sqrt(3), rel=0.2)
    if name == "cnn1d":
        assert set(state["batch_stats"]) == {"bn0", "bn1", "bn2"}
