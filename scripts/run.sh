#!/usr/bin/env bash
# Installs what is missing, builds, and runs the translator on stdin:
#   scripts/run.sh --model DIR [--beam_size N ...] < input.txt
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DROSETTA_BUILD_TESTS=OFF -DROSETTA_BUILD_BENCH=OFF >&2
cmake --build build --target rosetta-translate >&2
exec build/tools/rosetta-translate "$@"
