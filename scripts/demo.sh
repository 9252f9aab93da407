#!/usr/bin/env bash
# Set everything up, then run the main job: Padam against AMSGrad and momentum SGD.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/numpy_digits.py "$@"
