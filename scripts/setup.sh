#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install padam with every extra at the exact versions of
# constraints.txt; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python"
  "$python" -m venv .venv
fi

# Reinstall only when the dependency list or the pins changed (their hash is the stamp).
stamp=.venv/.padam-installed
wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing padam and its extras into .venv (first run: a few minutes)"
  # torch==2.13.0 stays explicit: on this kind of machine a CPU wheel of it lies on disk.
  # tensorflow-cpu is the Keras TensorFlow backend for the tests (the keras extra has none).
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
    -e ".[all,test,bench,recipes]" tensorflow-cpu torch==2.13.0
  echo "$wanted" >"$stamp"
fi
