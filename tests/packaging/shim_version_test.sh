#!/usr/bin/env bash
# The preloaded shim's verbose banner names the version of allocator/version.h,
# and libdropalloc.so carries the SONAME the CMake build gives it.
set -euo pipefail
root="$TEST_SRCDIR/$TEST_WORKSPACE"
lib="$root/allocator/libdropalloc.so"
version=$(sed -n 's/^#define DROPALLOC_VERSION_STRING "\(.*\)"$/\1/p' "$root/allocator/version.h")
if [[ -z "$version" ]]; then
  echo "FAIL: no DROPALLOC_VERSION_STRING in allocator/version.h" >&2
  exit 1
fi

banner=$(LD_PRELOAD="$lib" DROPALLOC_VERBOSE=1 /bin/true 2>&1 >/dev/null)
echo "banner: $banner"
if ! grep -q "^dropalloc: LD_PRELOAD shim active (dropalloc $version)" <<<"$banner"; then
  echo "FAIL: the DROPALLOC_VERBOSE=1 banner does not name version $version" >&2
  exit 1
fi
quiet=$(LD_PRELOAD="$lib" /bin/true 2>&1)
if [[ -n "$quiet" ]]; then
  echo "FAIL: without DROPALLOC_VERBOSE the shim printed: $quiet" >&2
  exit 1
fi

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
echo "SONAME: $soname"
if [[ "$soname" != "libdropalloc.so.${version%%.*}" ]]; then
  echo "FAIL: libdropalloc.so's SONAME is '$soname', expected libdropalloc.so.${version%%.*}" >&2
  exit 1
fi
echo "PASS"
