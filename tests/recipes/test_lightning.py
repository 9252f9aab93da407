"""docs/recipes.md, PyTorch Lightning: ``configure_optimizers`` with a scheduler dict, and a run
resumed from ``ckpt_path`` that ends where the uninterrupted run ends."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")

from padam_torch import Padam  # noqa: E402


class _Regression(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)]
        self.net = torch.nn.Sequential(*layers)

    def training_step(self, batch, batch_index):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        optimizer = Padam(self.parameters(), lr=0.01, partial=0.125, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def _loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _trainer(root, max_steps: int, **kwargs) -> lightning.Trainer:
    return lightning.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
        **kwargs,
    )  # fmt: skip


def test_lightning_scheduler_dict_and_resume_from_ckpt_path(tmp_path):
    # The uninterrupted run saves a checkpoint after step 4 (of 8) on the way.
    every_4 = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1
    )
    straight = _Regression()
    trainer = _trainer(tmp_path, 8, callbacks=[every_4])
    trainer.fit(straight, _loader())
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, Padam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**4)  # StepLR, per step

    (checkpoint,) = sorted((tmp_path / "checkpoints").glob("*step=4*.ckpt"))
    resumed = _Regression()
    _trainer(tmp_path / "resumed", 8).fit(resumed, _loader(), ckpt_path=checkpoint)
    for ours, theirs in zip(resumed.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
