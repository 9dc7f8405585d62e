#!/usr/bin/env bash
# build_options.sh - every CMake option of the project, alone and in a few combinations, either
# builds or stops at configure time with a message that says what to change.
#
# Options: TD_SANITIZE, TD_FUZZ, TD_BENCH, TD_TESTS, TD_WERROR, TD_LIBDEFLATE (CMakeLists.txt),
# TD_MAN, TD_INSTALL_SYSTEMD (cmake/install.cmake). Each case configures a fresh build directory
# and builds a few targets that link what the option changes (the static library and tensorctl
# always, then a test, a fuzz target, a benchmark, the man pages...), not everything, to keep the
# run short; or checks that the configuration fails with the expected words. .ci/run runs it.
#
#   tests/build_options.sh            every case
#   tests/build_options.sh NAME...    the cases whose name contains one of the words
# TD_BUILD_OPTIONS_DIR keeps the build directories there (default: a temporary directory, removed).
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${TD_BUILD_OPTIONS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/td-options.XXXXXX")}
[ -n "${TD_BUILD_OPTIONS_DIR:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
jobs=$(nproc)
pass=0
fail=0

# build NAME CC "CMAKE ARGS" TARGET...: configures and builds the targets; all must succeed.
build() {
    local name=$1 cc=$2 args=$3
    shift 3
    selected "$name" || return 0
    local dir=$work/$name t0=$SECONDS
    # shellcheck disable=SC2086
    if ! CC=$cc cmake -S "$src" -B "$dir" $args >"$dir.log" 2>&1; then
        bad "$name: configuring with $args failed"
        return
    fi
    if ! cmake --build "$dir" -j"$jobs" --target "$@" >>"$dir.log" 2>&1; then
        bad "$name: building $* with $args failed"
        return
    fi
    echo "ok    $name ($cc $args): built $* in $((SECONDS - t0)) s"
    pass=$((pass + 1))
}

# refuse NAME CC "CMAKE ARGS" WORDS: the configuration must fail, with WORDS in its message.
refuse() {
    local name=$1 cc=$2 args=$3 words=$4
    selected "$name" || return 0
    local dir=$work/$name
    # shellcheck disable=SC2086
    if CC=$cc cmake -S "$src" -B "$dir" $args >"$dir.log" 2>&1; then
        bad "$name: configuring with $args succeeded; it must stop and say '$words'"
        return
    fi
    # (CMake wraps long messages: compare with the line breaks and indentation folded)
    if ! tr -s ' \n' ' ' <"$dir.log" | grep -qF "$words"; then
        bad "$name: configuring with $args failed without saying '$words'"
        return
    fi
    echo "ok    $name ($cc $args): refused at configure time: ...$words..."
    pass=$((pass + 1))
}

bad() {
    echo "FAIL  $*"
    local log=$work/${1%%:*}.log
    [ -f "$log" ] && tail -40 "$log" | sed 's/^/      /'
    fail=$((fail + 1))
}

selected() {
    [ ${#want[@]} -eq 0 ] && return 0
    local w
    for w in "${want[@]}"; do
        case $1 in *"$w"*) return 0 ;; esac
    done
    return 1
}
want=("$@")

# Alone.
build defaults gcc "" tensord_static tensord_shared tensorctl tensord_daemon td_demo test_dict man
build sanitize gcc "-DTD_SANITIZE=address,undefined" tensord_static tensorctl test_dict
refuse sanitize-bad gcc "-DTD_SANITIZE=adress" "cannot build with -fsanitize=adress"
refuse sanitize-on gcc "-DTD_SANITIZE=ON" "e.g. -DTD_SANITIZE=address,undefined"
refuse fuzz-gcc gcc "-DTD_FUZZ=ON" "configure a new build directory with CC=clang"
build fuzz clang "-DTD_FUZZ=ON" fuzz_npy tensorctl tensord_daemon
build bench gcc "-DTD_BENCH=ON" bench_load bench_dequant
build no-tests gcc "-DTD_TESTS=OFF" tensord_static tensorctl
build werror-gcc gcc "-DTD_WERROR=ON" tensord_static tensorctl test_dict
build werror-clang clang "-DTD_WERROR=ON" tensord_static tensorctl test_daemon
build zlib-only gcc "-DTD_LIBDEFLATE=OFF" tensord_static test_zip
build no-man gcc "-DTD_MAN=OFF" tensord_static
build no-systemd gcc "-DTD_INSTALL_SYSTEMD=OFF" tensord_static

# Combined.
refuse fuzz-with-tests clang "-DTD_FUZZ=ON -DTD_TESTS=ON" "add -DTD_TESTS=OFF"
build fuzz-asan-bench clang "-DTD_FUZZ=ON -DTD_SANITIZE=address,undefined -DTD_BENCH=ON" \
    fuzz_load tensorctl bench_load
build asan-werror-zlib-bench gcc \
    "-DTD_SANITIZE=address,undefined -DTD_WERROR=ON -DTD_LIBDEFLATE=OFF -DTD_BENCH=ON" \
    tensorctl test_npz bench_save
build release-minimal clang \
    "-DCMAKE_BUILD_TYPE=Release -DTD_TESTS=OFF -DTD_MAN=OFF -DTD_INSTALL_SYSTEMD=OFF -DTD_WERROR=ON" \
    tensord_shared tensorctl tensord_daemon

echo "build options: $pass passed, $fail failed"
[ $fail -eq 0 ]
