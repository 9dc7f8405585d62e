#!/usr/bin/env bash
# Installs what the tests need (the Debian packages, llama.cpp's oracle library), builds, and runs
# every test with ctest. TD_SANITIZE=address,undefined runs them under ASan and UBSan (in
# build-asan/). Extra arguments go to ctest: -LE slow leaves out test_zip_huge (4.3 GB on disk),
# -L unit or -L integration runs one folder, -R NAME one test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake_args=()
if scripts/install-oracle.sh; then
    if [ -n "${TD_ORACLE_DIR:-}" ]; then
        cmake_args+=("-DTD_ORACLE_LIB=$TD_ORACLE_DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so")
    fi
else
    echo "test.sh: the llama.cpp oracle could not be installed: its tests will be skipped" >&2
fi
dir=$(scripts/build.sh "${cmake_args[@]}" | tail -n 1)
cd "$dir"
ctest --output-on-failure -j"$(nproc)" "$@"
