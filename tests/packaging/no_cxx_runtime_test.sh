#!/usr/bin/env bash
# libdropalloc.so loads no C++ runtime: a preloaded C program would pay about
# 1 MiB of resident memory for libstdc++ alone. It needs libc and nothing else,
# and references no symbol of libstdc++, libsupc++ or libgcc_s (operator new's
# failure path finds the runtime's functions by name when it needs them).
set -euo pipefail
lib="$TEST_SRCDIR/$TEST_WORKSPACE/allocator/libdropalloc.so"

needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort | tr '\n' ' ')
echo "NEEDED: $needed"
for n in $needed; do
  case "$n" in
    libc.so.6 | ld-linux-x86-64.so.2) ;;
    *)
      echo "FAIL: libdropalloc.so needs $n" >&2
      exit 1
      ;;
  esac
done

runtime=$(nm -D --undefined-only "$lib" | grep -E '@(GLIBCXX|CXXABI|GCC)_' || true)
if [[ -n "$runtime" ]]; then
  echo "FAIL: libdropalloc.so references the C++ runtime:" >&2
  echo "$runtime" >&2
  exit 1
fi
echo "OK: libc only"
