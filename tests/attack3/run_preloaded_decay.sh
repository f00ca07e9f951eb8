#!/usr/bin/env bash
# Runs a program with libdropalloc.so preloaded and a 1 ms decay, so that the
# purger and every free's decay run all the time.
set -euo pipefail
lib="$TEST_SRCDIR/$TEST_WORKSPACE/allocator/libdropalloc.so"
[[ -f "$lib" ]] || { echo "FAIL: $lib not found" >&2; exit 1; }
prog="$1"
shift
DROPALLOC_DECAY_MS=1 DROPALLOC_TEST_REQUIRE_SHIM=1 LD_PRELOAD="$lib" exec "$prog" "$@"
