#!/usr/bin/env bash
# Set up ./.venv and run the whole test suite (Ray starts once, locally, with auth disabled).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# CI: the browser check of report.html (tests/test_report_browser.py) needs Chromium; install Debian's
# package when it is missing. Locally the check is skipped without one, so no root is needed here.
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; } ||
    echo "test.sh: could not install chromium; the browser check of report.html will be skipped" >&2
fi
export RAY_AUTH_MODE=disabled RAY_AIR_NEW_OUTPUT=0
.venv/bin/python -m pytest -q "$@"
