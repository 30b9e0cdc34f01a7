#!/usr/bin/env bash
# `make gpu-wheels` (`make gpu-wheels-bridge`): the cp312 wheels of gpu/wheels.txt (gpu/wheels-bridge.txt), what the
# lent GPU machine lacks for the NeMo (Megatron-Bridge) path, and a wheel of this project, into .whl/ (.whl-bridge/;
# git-ignored; the device tool carries it). Source-only packages are built here as pure-Python wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=gpu/wheels.txt DEST=.whl
if [ "${1:-}" = "--bridge" ]; then LIST=gpu/wheels-bridge.txt DEST=.whl-bridge; fi
PIP="${PIP:-.venv/bin/pip}"
mkdir -p "$DEST"
PLATFORMS="--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform any"
grep -v '^#' "$LIST" | while read -r req; do
  [ -n "$req" ] || continue
  if ! "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS -d "$DEST" "$req" 2>/dev/null; then
    "$PIP" wheel -q --no-deps -w "$DEST" "$req"  # source-only on the index (e.g. wget, antlr4-python3-runtime)
  fi
done
"$PIP" wheel -q --no-deps --no-build-isolation -w "$DEST" .
find . -maxdepth 2 -name '*.egg-info' -not -path './.venv*' -prune -exec rm -rf {} +
du -sh "$DEST"
