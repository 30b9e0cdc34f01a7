#!/usr/bin/env bash
# The GPU check, run on the lent machine from the repository root with the carried wheels:
#   gpu/check.sh            the NeMo path (.whl/, make gpu-wheels), gpu/check.py
#   gpu/check.sh --bridge   the Megatron-Bridge path (.whl-bridge/, make gpu-wheels-bridge), gpu/check_bridge.py
# It installs the carried wheels beside the machine's own packages (each backend in its own target: their
# megatron-core versions differ), then runs the check (phases and figures in $OUT/gpu_report.json).
# Everything stays on that machine; nothing is downloaded. Other arguments (e.g. --dry) go to the check.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl CHECK=gpu/check.py SITE="${MLSL_GPU_SITE:-/tmp/mlsl-site}"
if [ "${1:-}" = "--bridge" ]; then shift; WHEELS=.whl-bridge CHECK=gpu/check_bridge.py SITE="${SITE}-bridge"; fi
export OUT="${OUT:-$PWD/out/gpu}"
STUB="${SITE}-stubs"
mkdir -p "$OUT" "$SITE" "$STUB/pulp"
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
# modelopt imports pulp at load only to name types; training never calls it (it is 16 MB: not carried)
printf 'def __getattr__(name):\n    return type(name, (), {})\n' > "$STUB/pulp/__init__.py"
export PYTHONPATH="$PWD:$PWD/plugins:$STUB:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MLSL_RECIPES="$PWD/recipes" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONWARNINGS=ignore
echo "installed carried wheels ($WHEELS) in $(( $(date +%s) - start ))s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 "$CHECK" "$@" 2>&1 | tee "$OUT/check.log"
