#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install padam with every extra; a no-op when nothing changed.
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

# Reinstall only when the dependency list changed (pyproject.toml's hash is the stamp).
stamp=.venv/.padam-installed
wanted=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing padam and its extras into .venv (first run: a few minutes)"
  # torch==2.13.0 is pinned: on this kind of machine a CPU wheel of it lies on disk.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[all,test,bench]"
  echo "$wanted" >"$stamp"
fi
