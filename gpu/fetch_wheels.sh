#!/usr/bin/env bash
# `make gpu-wheels`: the cp312 wheels of gpu/wheels.txt (what the lent GPU machine lacks) and a wheel of this
# project, into .whl/ (git-ignored; the device tool carries it). Source-only packages are built here as
# pure-Python wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
mkdir -p .whl
PLATFORMS="--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform any"
grep -v '^#' gpu/wheels.txt | while read -r req; do
  [ -n "$req" ] || continue
  if ! "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS -d .whl "$req" 2>/dev/null; then
    "$PIP" wheel -q --no-deps -w .whl "$req"  # source-only on the index (e.g. wget, antlr4-python3-runtime)
  fi
done
"$PIP" wheel -q --no-deps --no-build-isolation -w .whl .
find . -maxdepth 2 -name '*.egg-info' -not -path './.venv/*' -prune -exec rm -rf {} +
du -sh .whl
