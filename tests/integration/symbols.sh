#!/usr/bin/env bash
# symbols.sh - libtensord keeps to one namespace. Every global symbol defined in libtensord.a
# is td_ (public) or td__ (internal), and libtensord.so exports exactly the functions that
# include/tensord.h declares with TD_EXTERN, nothing else; and debian/libtensord1.symbols lists
# exactly those. Run by ctest with TD_BUILD_DIR and
# TD_SOURCE_DIR set; by hand: TD_BUILD_DIR=build bash tests/integration/symbols.sh
set -euo pipefail
build=${TD_BUILD_DIR:?TD_BUILD_DIR must name a built build directory}
src=${TD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fail=0

# Defined, global (upper-case type letter) symbols of the static library.
# (A sanitizer build adds its own: ASan's one-definition-rule markers, __odr_asan.NAME.)
bad=$(nm -g --defined-only "$build/libtensord.a" 2>/dev/null |
      awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ {print $3}' | grep -v '^td_' |
      grep -v '^__odr_asan\.td_' | sort -u || true)
if [ -n "$bad" ]; then
    echo "FAIL: libtensord.a defines global symbols outside td_/td__:"
    echo "$bad" | sed 's/^/    /'
    fail=1
fi
count=$(nm -g --defined-only "$build/libtensord.a" | awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/' | wc -l)

so=$(readlink -f "$build/libtensord.so" 2>/dev/null || true)
[ -n "$so" ] && [ -f "$so" ] || { echo "FAIL: no libtensord.so in $build"; exit 1; }
exported=$(nm -D --defined-only "$so" | awk 'NF == 3 {print $3}' | sort -u)
declared=$(grep -ohE 'TD_EXTERN[^;(]*[ *]\(?(td_[a-z0-9_]+)\(' "$src/include/tensord.h" |
           grep -oE 'td_[a-z0-9_]+\($' | tr -d '(' | sort -u)
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
if [ -n "$extra" ]; then
    echo "FAIL: $so exports symbols tensord.h does not declare:"
    echo "$extra" | sed 's/^/    /'
    fail=1
fi
if [ -n "$missing" ]; then
    echo "FAIL: tensord.h declares functions $so does not export:"
    echo "$missing" | sed 's/^/    /'
    fail=1
fi
# The Debian symbols file lists exactly what the library exports (debian/README.source says how
# to make it anew when the API changes).
symfile=$(ls "$src"/debian/libtensord*.symbols 2>/dev/null | head -n 1)
if [ -n "$symfile" ]; then
    listed=$(awk '$1 ~ /^td_/ {sub(/@.*/, "", $1); print $1}' "$symfile" | sort -u)
    if [ "$listed" != "$exported" ]; then
        echo "FAIL: $(basename "$symfile") and $(basename "$so") disagree (< file, > library):"
        diff <(echo "$listed") <(echo "$exported") | grep '^[<>]' | sed 's/^/    /'
        fail=1
    fi
fi
[ "$fail" -eq 0 ] || exit 1
echo "ok: libtensord.a: $count global symbols, all td_/td__;" \
     "$(basename "$so"): $(echo "$exported" | wc -l) exported, exactly tensord.h's"
