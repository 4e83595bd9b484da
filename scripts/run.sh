#!/usr/bin/env bash
# Installs what is missing, builds, and runs the daemon in the foreground:
#   scripts/run.sh --model NAME=DIR [--listen 0.0.0.0:50051] [rosettad flags...]
# Ctrl-C (SIGINT) or SIGTERM drains and stops it. The clients (build/client/rosetta,
# client/python/rosetta_client.py) and rosetta-translate are built too.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DROSETTA_BUILD_TESTS=OFF -DROSETTA_BUILD_BENCH=OFF >&2
cmake --build build --target rosettad rosetta rosetta-translate >&2
exec build/server/rosettad "$@"
