"""docs/recipes.md, timm: Padam through timm's public optimizer API (an ``OptimizerRegistry`` of
your own with an ``OptimInfo``), so timm's parameter groups (no weight decay on biases and
norms, layer decay) apply. timm imports torchvision at import time; this project keeps
torchvision out (PyPI's build does not match this torch), so here the test skips with that
reason unless both are installed."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
try:
    import timm.optim
except ImportError as error:  # timm absent, or present without torchvision
    pytest.skip(f"timm cannot be imported: {error}", allow_module_level=True)

from padam_torch import Padam  # noqa: E402


def test_timm_registry_creates_padam_with_its_parameter_groups():
    registry = timm.optim.OptimizerRegistry()
    registry.register(
        timm.optim.OptimInfo(
            name="padam", opt_class=Padam, description="Padam (partially adaptive momentum)",
            has_eps=True, has_betas=True,
        )
    )  # fmt: skip
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = registry.create_optimizer(model, "padam", lr=0.05, weight_decay=5e-4)
    assert isinstance(optimizer, Padam)
    decays = sorted(group["weight_decay"] for group in optimizer.param_groups)
    assert decays == [0.0, 5e-4]  # biases and the norm are not decayed
    assert all(group["lr"] == 0.05 for group in optimizer.param_groups)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
