#!/usr/bin/env bash
# Set up ./.venv and run the whole test suite (Ray starts once, locally, with auth disabled).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled RAY_AIR_NEW_OUTPUT=0
.venv/bin/python -m pytest -q "$@"
