#!/bin/bash
# install-oracle.sh - installs the llama.cpp GGUF oracle for test_gguf_llama.
#
# llama.cpp's own GGUF code (libggml-base.so, with gguf_init_from_file, gguf_write_to_file and
# the gguf_get_* / gguf_set_* API) ships prebuilt in the npm package
# @node-llama-cpp/linux-x64@3.21.1. test_gguf_llama loads it with dlopen; it is never a build
# dependency. Where it goes (the test looks in the same place):
#   $TD_GGUF_ORACLE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/tensord/gguf-oracle
#
# Idempotent and quick when the package is there. When it cannot be installed (no npm, no
# registry), it says SKIP and exits 0: the interop test then skips loudly too.
set -u

pkg="@node-llama-cpp/linux-x64@3.21.1"
dir="${TD_GGUF_ORACLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tensord/gguf-oracle}"
lib="$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"

if [ -f "$lib" ]; then
    echo "gguf oracle: $pkg present ($lib)"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "SKIP: gguf oracle: npm is not installed, cannot install $pkg (test_gguf_llama will skip)"
    exit 0
fi
mkdir -p "$dir" || { echo "SKIP: gguf oracle: cannot create $dir"; exit 0; }
echo "gguf oracle: installing $pkg into $dir"
# --ignore-scripts: we only want the shipped files; nothing of the package runs here.
if ! timeout 600 npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts \
        "$pkg"; then
    echo "SKIP: gguf oracle: npm install $pkg failed (test_gguf_llama will skip)"
    exit 0
fi
if [ ! -f "$lib" ]; then
    echo "SKIP: gguf oracle: $pkg installed but $lib is missing (test_gguf_llama will skip)"
    exit 0
fi
echo "gguf oracle: ready ($lib)"
