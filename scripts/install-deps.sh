#!/usr/bin/env bash
# Installs the Debian 12 packages tensord builds and tests with. Idempotent; uses sudo when not
# root.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang llvm libclang-rt-14-dev
      libuv1-dev zlib1g-dev libmsgpack-dev check libsystemd-dev libjansson-dev libdeflate-dev
      python3-numpy python3-pywt valgrind scdoc systemd man-db gnuplot-nox
      python3-dev libdlpack-dev python3-pytest python3-torch)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# npm fetches the llama.cpp oracle for the interoperability tests. Machines that already have
# Node.js from elsewhere keep theirs (Debian's npm would conflict with it).
if ! command -v npm > /dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm ||
        echo "install-deps: npm unavailable; the oracle tests will be skipped" >&2
fi
