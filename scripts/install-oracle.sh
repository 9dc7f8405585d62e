#!/usr/bin/env bash
# install-oracle.sh - installs llama.cpp's libggml-base.so, the oracle of the interoperability
# tests (test_gguf_llama, test_ggml_quants_oracle) and of some benchmarks.
#
# llama.cpp's own GGUF code and dequantizers (gguf_init_from_file, gguf_write_to_file, the
# gguf_get_* / gguf_set_* API, ggml_get_type_traits) ship prebuilt in the npm package
# @node-llama-cpp/linux-x64@3.21.1. The tests load it with dlopen; it is never a build dependency.
# It goes to $TD_ORACLE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/tensord/gguf-oracle; the
# library is then node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so there,
# which is the default of the CMake cache variable TD_ORACLE_LIB (tests/CMakeLists.txt).
#
# Idempotent and silent when the library is there. Otherwise one line, and npm's whole log only
# when it fails. Exits 1 when it cannot install (no npm, no registry): the oracle tests then exit
# 77, which ctest reports as skipped and CI (.ci/run) as a failure.
set -uo pipefail

pkg="@node-llama-cpp/linux-x64@3.21.1"
dir="${TD_ORACLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tensord/gguf-oracle}"
lib="$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"

[ -f "$lib" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
    echo "install-oracle: npm is not installed (scripts/install-deps.sh installs it)" >&2
    exit 1
fi
mkdir -p "$dir" || exit 1
log=$(mktemp "${TMPDIR:-/tmp}/tensord-npm.XXXXXX")
trap 'rm -f "$log"' EXIT
echo "installing the llama.cpp oracle ($pkg)..."
# --ignore-scripts: only the shipped files are wanted; nothing of the package runs here.
if ! timeout 600 npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts \
        "$pkg" >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-oracle: npm install $pkg failed (its log is above)" >&2
    exit 1
fi
if [ ! -f "$lib" ]; then
    echo "install-oracle: $pkg is installed but has no $lib" >&2
    exit 1
fi
