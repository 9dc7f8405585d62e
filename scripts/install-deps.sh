#!/usr/bin/env bash
# Installs the Debian 12 packages tensord builds and tests with. Idempotent; uses sudo when not
# root.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang llvm libclang-rt-14-dev
      libuv1-dev zlib1g-dev libmsgpack-dev check libsystemd-dev libjansson-dev libdeflate-dev
      python3-numpy python3-pywt npm valgrind scdoc systemd)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
