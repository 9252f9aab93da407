#!/usr/bin/env bash
# Set everything up, then run the whole test suite: lint, types, the main suite, and the Keras tests
# once per Keras backend, each in its own process (Keras picks its backend once per process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python=.venv/bin/python
# pytest-xdist: one worker per core (PADAM_TEST_WORKERS=0: no workers, in-process). Each worker
# is its own process, so a Keras run's workers all take that run's KERAS_BACKEND.
workers=${PADAM_TEST_WORKERS:-auto}

# pytest exits 5 when a group collects no test: that is not a failure of the group.
run_pytest() {
  local status=0
  "$python" -m pytest "$@" || status=$?
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
}

echo "== ruff"
"$python" -m ruff check .
echo "== mypy (every package's annotations; [tool.mypy] in pyproject.toml)"
"$python" -m mypy
echo "== main suite (core, torch, jax, compare)"
run_pytest tests --ignore=tests/keras -q -n "$workers"
if [ -d tests/keras ]; then
  for backend in tensorflow jax torch; do
    echo "== keras tests, KERAS_BACKEND=$backend"
    KERAS_BACKEND=$backend run_pytest tests/keras -q -n "$workers"
  done
fi
