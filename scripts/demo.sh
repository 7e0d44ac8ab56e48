#!/usr/bin/env bash
# The embedded default: set up, make a small toy world (webdataset shards + COCO ground truth), mine it on a
# local Ray instance with the project's own trained tiny models, score the pairs against the ground truth,
# and check the output against schemas/. No network beyond the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
OUT=${OUT:-demo-output}
.venv/bin/ovmine demo --out "$OUT"
.venv/bin/ovmine validate "$OUT/mined"
