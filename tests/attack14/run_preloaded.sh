#!/usr/bin/env bash
# Runs a test program with libdropalloc.so preloaded and requires that the
# preload took: run_preloaded.sh <program> [args...]
set -euo pipefail
lib="$TEST_SRCDIR/$TEST_WORKSPACE/allocator/libdropalloc.so"
[[ -f "$lib" ]] || { echo "FAIL: $lib not found" >&2; exit 1; }
prog="$1"
shift
DROPALLOC_TEST_REQUIRE_SHIM=1 LD_PRELOAD="$lib" exec "$prog" "$@"
