#!/usr/bin/env bash
# Create ./.venv (if missing) and install entropic-tune with its test extras.
# torch is pinned first to the CPU build on purpose: an unpinned torch may pull a multi-GB CUDA build.
# On a GPU machine, install the torch build you want before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
# setuptools reports every editable install with a multi-line "Editable installation." warning that
# pip shows even with -q; it is information, not a problem, so only that message is filtered out
# (every other warning and every error still shows).
PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation" \
  .venv/bin/python -m pip install -q -e ".[test]"
