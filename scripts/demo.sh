#!/usr/bin/env bash
# The embedded default: set up, generate a small image–caption dataset, mine it on a local Ray instance with
# the offline tiny config, and check the output against schemas/. No network beyond the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
OUT=${OUT:-demo-output}
.venv/bin/ovmine sample-data demo-data --shards 4 --per-shard 16
rm -rf "$OUT"
.venv/bin/ovmine mine --config configs/tiny.yaml --input "demo-data/{00000..00003}.tar" --output "$OUT"
.venv/bin/ovmine validate "$OUT"
