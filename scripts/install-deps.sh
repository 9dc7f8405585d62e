#!/usr/bin/env bash
# Installs the Debian 12 packages tensord builds and tests with. Idempotent (nothing happens when
# everything is there); uses sudo when not root. Quiet: one line per step, and apt's whole log
# only when it fails.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git clang llvm libclang-rt-14-dev
      libuv1-dev zlib1g-dev libmsgpack-dev check libsystemd-dev libjansson-dev libdeflate-dev
      python3-numpy unzip valgrind scdoc systemd man-db gnuplot-nox
      python3-dev libdlpack-dev python3-pytest python3-torch)
# npm fetches the llama.cpp oracle for the interoperability tests (scripts/install-oracle.sh).
# Machines that already have Node.js from elsewhere keep theirs (Debian's npm would conflict).
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-deps: not root and no sudo: install ${missing[*]} as root" >&2
        exit 1
    }
    sudo=(sudo)
fi
log=$(mktemp "${TMPDIR:-/tmp}/tensord-apt.XXXXXX")
trap 'rm -f "$log"' EXIT
echo "installing ${#missing[@]} Debian package$([ ${#missing[@]} -eq 1 ] || echo s) (${missing[*]})..."
# (another apt or dpkg at work holds their lock: wait for it rather than fail)
lock=(-o DPkg::Lock::Timeout=600)
if ! { "${sudo[@]}" apt-get "${lock[@]}" update -q &&
       "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -q \
           --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get failed (its log is above)" >&2
    exit 1
fi
