#!/usr/bin/env bash
# Everything a lent GPU should measure, in one call (aim: under 8 minutes on an H100), into one JSON file:
#   1. the GPU tests (pytest -m gpu: tiny models on the device as on the CPU, the real-size COCO architecture);
#   2. FLOPs per image of each model stage (bench/flops.py);
#   3. the real-size mining stages per precision: images/s, model share, host CPU per image, MFU
#      (bench/gpu_bench.py), and the trainers' real-size step times;
#   4. the toy world's pairs per precision against fp32's (bench/precision.py);
#   5. the language-model stages' captions/s and images/s at real size (bench/language_models.py).
#
#   bash bench/gpu.sh                                   # on the GPU machine: writes bench-gpu.json
#   bash bench/gpu.sh --device cpu --quick --out F      # the same steps with the toy models, on a CPU (tested)
#
# PYTHON names the interpreter (default: .venv/bin/python, else python3). A failing step is recorded in the JSON
# (its exit status and the end of its output) and the next one still runs; the script exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda quick="" out=bench-gpu.json
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (expected --device cuda|cpu, --quick, --out FILE)" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {   # step NAME COMMAND...: stdout to $work/NAME.json, status and seconds to $work/NAME.status
  local name="$1"; shift
  local start=$SECONDS
  echo "== $name: $*" >&2
  "$@" >"$work/$name.out" 2>"$work/$name.err"
  echo "$? $((SECONDS - start))" >"$work/$name.status"
  tail -3 "$work/$name.err" >&2
}

# the quick run keeps the GPU tests to the tiny models (the real-size architecture takes minutes on a CPU)
tests=(tests/test_gpu.py)
[ -n "$quick" ] && tests+=(-k "tiny or trains or decode")
step tests env OVMINE_TEST_DEVICE="$device" "$py" -m pytest -q -p no:cacheprovider -m gpu "${tests[@]}"
step flops "$py" bench/flops.py $quick --json
step stages "$py" bench/gpu_bench.py --device "$device" $quick --flops "$work/flops.out" --json
if [ -n "$quick" ]; then
  step precision "$py" bench/precision.py --device "$device" --shards 1 --per-shard 16 --json
else
  step precision "$py" bench/precision.py --device "$device" --json
fi
step language "$py" bench/language_models.py --device "$device" $quick --json

"$py" - "$work" "$out" "$device" <<'PY'
import json, sys
from pathlib import Path

work, out, device = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
result, failed = {}, []
for name in ("tests", "flops", "stages", "precision", "language"):
    status, seconds = (work / f"{name}.status").read_text().split()
    entry = {"exit_status": int(status), "seconds": int(seconds)}
    text = (work / f"{name}.out").read_text()
    if name == "tests":
        entry["summary"] = text.strip().splitlines()[-1] if text.strip() else ""
    elif int(status) == 0:
        entry["result"] = json.loads(text.strip().splitlines()[-1])
    if int(status) != 0:
        failed.append(name)
        entry["error_tail"] = (work / f"{name}.err").read_text().strip().splitlines()[-5:]
    result[name] = entry
try:
    import torch
    gpu = torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else "cpu"
    result["torch"] = torch.__version__
except Exception as err:   # the interpreter cannot import torch: every step above failed and says why
    gpu = f"unknown ({err})"
result["device"] = gpu
result["failed"] = failed
Path(out).write_text(json.dumps(result, indent=1))
print(f"bench/gpu.sh on {gpu}: {out} written; " + (f"failed: {', '.join(failed)}" if failed else "every step passed"))
sys.exit(1 if failed else 0)
PY
