#!/usr/bin/env bash
# The GPU check, run on the lent machine from the repository root with .whl/ carried (make gpu-wheels):
# installs the carried wheels beside the machine's own packages, then runs gpu/check.py (phases and figures in
# $OUT/gpu_report.json). Everything stays on that machine; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/out/gpu}"
SITE="${MLSL_GPU_SITE:-/tmp/mlsl-site}"
STUB="${SITE}-stubs"
mkdir -p "$OUT" "$SITE" "$STUB/pulp"
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
# modelopt imports pulp at load only to name types; training never calls it (it is 16 MB: not carried)
printf 'def __getattr__(name):\n    return type(name, (), {})\n' > "$STUB/pulp/__init__.py"
export PYTHONPATH="$PWD:$PWD/plugins:$STUB:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MLSL_RECIPES="$PWD/recipes" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONWARNINGS=ignore
echo "installed carried wheels in $(( $(date +%s) - start ))s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 gpu/check.py "$@" 2>&1 | tee "$OUT/check.log"
