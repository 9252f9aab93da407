"""Recipe tests: the pipelines of docs/recipes.md on tiny models built from configs and synthetic
data. Nothing is downloaded: the hubs are switched off before any library is imported, and each
test skips with the reason when its library is absent."""

from __future__ import annotations

import os

for _variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_variable] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
