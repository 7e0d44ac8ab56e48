#!/usr/bin/env bash
# Set up and run the test suite (slow and GPU tests are skipped; add `-m slow` to run them). The 15 slowest
# tests are listed at the end, so that a test that grows slow shows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The suite starts a few hundred Python processes (CLI runs, Ray workers) that import torch, Ray and open_clip:
# set-up compiled the installed packages, but with bytecode caching off (PYTHONDONTWRITEBYTECODE) each one would
# still compile this repository's own modules afresh. Let the first one write the cache for the rest.
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python -m pytest --durations=15 "$@"
