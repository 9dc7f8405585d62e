#!/usr/bin/env bash
# The quick start: installs what tensord needs, builds it, and runs the demo: a tensord daemon
# on a temporary socket, a sample model saved in every format, two separate client processes
# loading all of it through the daemon, `tensorctl status`, and the daemon stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
dir=$(scripts/build.sh | tail -n 1)
work=$(mktemp -d)
sock="$work/tensord.sock"
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== starting tensord on $sock"
"$dir/daemon/tensord" --socket "$sock" 2> "$work/tensord.log" &
daemon_pid=$!
for _ in $(seq 100); do
    "$dir/tensorctl" --socket "$sock" status > /dev/null 2>&1 && break
    sleep 0.05
done

echo "== saving a sample model in every format"
mkdir "$work/models"
"$dir/td_demo" save "$work/models"
for f in "$work"/models/*; do
    echo
    echo "== tensorctl ls $(basename "$f")"
    "$dir/tensorctl" ls "$f"
done

echo
echo "== two client processes load every file through tensord"
export TENSORD_SOCKET="$sock"
"$dir/td_demo" load "$work"/models/* > "$work/client1.txt" &
c1=$!
"$dir/td_demo" load "$work"/models/* > "$work/client2.txt" &
c2=$!
wait $c1 $c2
cat "$work/client1.txt" "$work/client2.txt"

echo
echo "== tensorctl status"
"$dir/tensorctl" --socket "$sock" status

echo
echo "== stopping tensord (SIGTERM)"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
daemon_pid=
echo "tensord exited with status 0; its log:"
sed 's/^/  /' "$work/tensord.log"
