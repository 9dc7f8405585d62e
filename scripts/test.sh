#!/usr/bin/env bash
# Builds and runs every test. TD_SANITIZE=address,undefined runs them under ASan and UBSan (in
# build-asan/).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(scripts/build.sh | tail -n 1)
cd "$dir"
ctest --output-on-failure -j"$(nproc)"
