#!/usr/bin/env bash
# Set up and run the test suite (slow and GPU tests are skipped; add `-m slow` to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
