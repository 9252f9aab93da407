#!/usr/bin/env bash
# Set everything up, then run the main job: `padam compare` on its built-in default (MNIST-1D,
# momentum SGD / Adam / AMSGrad / AdamW / Padam, 3 seeds; a few minutes on 2 cores).
# Extra arguments go to `padam compare` (e.g. `bash scripts/demo.sh --epochs 5 --seeds 0`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/padam compare "$@"
