"""docs/recipes.md, Hugging Face Trainer: ``optimizers=``, ``optimizer_cls_and_kwargs`` and
resuming from a checkpoint, on a 1-layer BERT built from a config."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from padam_torch import Padam  # noqa: E402


class _Pairs(torch.utils.data.Dataset):
    """Synthetic sequence classification: the label is whether token 1 occurs."""

    def __init__(self, count: int = 32, length: int = 8) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(2, 30, (count, length), generator=generator)
        self.labels = (torch.rand(count, generator=generator) < 0.5).long()
        self.ids[self.labels == 1, 0] = 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        return {
            "input_ids": self.ids[index],
            "attention_mask": torch.ones_like(self.ids[index]),
            "labels": self.labels[index],
        }


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def _arguments(output_dir: Path, **overrides) -> transformers.TrainingArguments:
    settings = dict(
        output_dir=str(output_dir), max_steps=6, per_device_train_batch_size=8,
        save_strategy="steps", save_steps=3, logging_steps=3, report_to="none", use_cpu=True,
        seed=0, dataloader_num_workers=0, disable_tqdm=True, learning_rate=1e-3,
    )  # fmt: skip
    settings.update(overrides)
    return transformers.TrainingArguments(**settings)


def test_trainer_with_a_padam_instance(tmp_path):
    model = _model()
    optimizer = Padam(model.parameters(), lr=1e-3, variant="torch")
    trainer = transformers.Trainer(
        model=model, args=_arguments(tmp_path), train_dataset=_Pairs(),
        optimizers=(optimizer, None),  # None: the Trainer builds its scheduler on Padam
    )  # fmt: skip
    trainer.train()
    assert _unwrap(trainer.optimizer) is optimizer
    assert int(optimizer.state[next(iter(model.parameters()))]["step"]) == 6


def _unwrap(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer inside accelerate's AcceleratedOptimizer wrapper, if any."""
    return getattr(optimizer, "optimizer", optimizer)


def _parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in model.parameters()]


def test_trainer_optimizer_cls_and_kwargs_and_resume(tmp_path):
    # optimizer_cls_and_kwargs builds Padam(grouped_params, **kwargs): TrainingArguments'
    # learning_rate is NOT passed, so lr must be in the kwargs (else Padam's 0.1).
    kwargs = {"lr": 1e-3, "partial": 0.125, "variant": "torch"}
    straight = transformers.Trainer(
        model=_model(), args=_arguments(tmp_path / "straight"), train_dataset=_Pairs(),
        optimizer_cls_and_kwargs=(Padam, kwargs),
    )  # fmt: skip
    straight.train()
    assert isinstance(_unwrap(straight.optimizer), Padam)

    # The same run, stopped after step 3 and resumed from checkpoint-3 in a new Trainer.
    resumed = transformers.Trainer(
        model=_model(), args=_arguments(tmp_path / "straight"), train_dataset=_Pairs(),
        optimizer_cls_and_kwargs=(Padam, kwargs),
    )  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-3"))
    for ours, theirs in zip(_parameters(resumed.model), _parameters(straight.model), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
