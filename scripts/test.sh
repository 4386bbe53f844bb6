#!/usr/bin/env bash
# Set up ./.venv and run the whole test suite (Ray starts once, locally, with a fresh auth token).
#   bash scripts/test.sh            the full suite (README's test command; CI runs it)
#   bash scripts/test.sh --fast     the quick loop: -m "not slow" (no test over ~5 s), no setup when
#                                   ./.venv exists
# Further arguments go to pytest. With CI=true the 20 slowest tests are listed (--durations=20).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
fast=false
if [ "${1:-}" = "--fast" ]; then
  fast=true
  shift
  args+=(-m "not slow")
fi
if ! $fast || [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
# CI: the browser check of report.html (tests/report/test_report_browser.py) needs Chromium; install
# Debian's package when it is missing. Locally the check is skipped without one, so no root is needed.
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; } ||
    echo "test.sh: could not install chromium; the browser check of report.html will be skipped" >&2
fi
if [ "${CI:-}" = "true" ]; then
  args+=(--durations=20)
fi
export RAY_AIR_NEW_OUTPUT=0
.venv/bin/python -m pytest -q "${args[@]}" "$@"
