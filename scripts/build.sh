#!/usr/bin/env bash
# Configures and builds into build/ (or build-asan/ when TD_SANITIZE is set). Extra arguments go
# to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
san=${TD_SANITIZE:-}
dir=build${san:+-asan}
type=${CMAKE_BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DTD_SANITIZE="$san" -DTD_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
echo "$dir"
