#!/usr/bin/env bash
# Set up ./.venv and run the main job: the default method comparison on the embedded task.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/entropic-tune compare "$@"
