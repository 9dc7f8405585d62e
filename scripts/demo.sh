#!/usr/bin/env bash
# The quick start: installs what tensord needs, builds it, and runs a short demo: save a few
# arrays in every format, list them with tensorctl, and load them back.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
dir=$(scripts/build.sh | tail -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== saving arrays in every format into $work"
"$dir/td_demo" save "$work"
for f in "$work"/*; do
    echo
    echo "== tensorctl ls $(basename "$f")"
    "$dir/tensorctl" ls "$f"
done
for f in "$work"/*; do
    echo
    echo "== loading $(basename "$f")"
    "$dir/td_demo" load "$f"
done
