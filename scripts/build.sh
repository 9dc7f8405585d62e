#!/usr/bin/env bash
# Configures and builds into build/ (or build-asan/ when TD_SANITIZE is set), warnings as errors.
# Extra arguments go to cmake's configure step. Prints one line while it works and the build
# directory at the end; the compiler's output only when something fails (TD_VERBOSE=1: always).
set -euo pipefail
cd "$(dirname "$0")/.."
san=${TD_SANITIZE:-}
dir=build${san:+-asan}
type=${CMAKE_BUILD_TYPE:-RelWithDebInfo}
echo "building tensord in $dir/ ($type${san:+, -fsanitize=$san})..." >&2
log=$(mktemp "${TMPDIR:-/tmp}/tensord-build.XXXXXX")
trap 'rm -f "$log"' EXIT
if [ -n "${TD_VERBOSE:-}" ]; then
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DTD_SANITIZE="$san" -DTD_WERROR=ON "$@" >&2
    cmake --build "$dir" -j"$(nproc)" >&2
elif ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DTD_SANITIZE="$san" -DTD_WERROR=ON \
             "$@" && cmake --build "$dir" -j"$(nproc)"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "build.sh: the build failed (its log is above)" >&2
    exit 1
fi
echo "$dir"
