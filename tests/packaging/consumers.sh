#!/usr/bin/env bash
# Uses dropalloc the ways another project would, and runs the example consumers:
#
#   bazel  examples/consumer_bazel: a workspace of its own with
#          local_repository(name = "dropalloc", path = "../.."), built with its
#          own output base (so none of this repository's .bazelrc applies):
#          a pmr program, a cache program and a cc_binary(malloc = ...).
#   cmake  cmake configure, build and install into a prefix; the installed
#          libdropalloc.so has its SONAME and exports no C++ symbol; then
#          examples/consumer_cmake (find_package) and
#          examples/consumer_pkgconfig (pkg-config --cflags --libs) are built
#          against that prefix only, and run.
#
# usage: tests/packaging/consumers.sh [bazel] [cmake]     (default: both)
#
#   DROPALLOC_TEST_CONSUMERS_DIR  where the builds go (default: a directory in
#                            $TMPDIR or /tmp named after this checkout); never
#                            inside the source tree, so git status stays clean
#   CI=true                  non-interactive Bazel output
#
# scripts/test.sh runs it as the stage "consumers". Exits non-zero, naming the
# step, at the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(bazel cmake)
for step in "${steps[@]}"; do
  case "$step" in
    bazel|cmake) ;;
    *) echo "consumers.sh: unknown step '$step' (expected bazel, cmake)" >&2; exit 2 ;;
  esac
done

checkout_id=$(printf '%s' "$root" | md5sum | cut -c1-8)
work=${DROPALLOC_TEST_CONSUMERS_DIR:-${TMPDIR:-/tmp}/dropalloc-consumers-$checkout_id}
case "$work/" in
  "$root"/*) echo "consumers.sh: DROPALLOC_TEST_CONSUMERS_DIR must be outside the source tree ($root)" >&2; exit 2 ;;
esac
mkdir -p "$work"

version=$(sed -n 's/^#define DROPALLOC_VERSION_STRING "\(.*\)"$/\1/p' allocator/version.h)
[[ -n "$version" ]] || { echo "consumers.sh: no DROPALLOC_VERSION_STRING in allocator/version.h" >&2; exit 1; }
soname="libdropalloc.so.${version%%.*}"

say() { echo "==> consumers: $*"; }
fail() { echo "==> consumers: FAILED: $*" >&2; exit 1; }

# run NAME PROGRAM...: runs a consumer program, which exits 0 when it worked.
run() {
  local name="$1"
  shift
  say "run $name"
  "$@" || fail "$name exited with status $?"
}

bazel_consumer() {
  local output_base="$work/bazel-output-base" flags=(--symlink_prefix=/)
  if [[ "${CI:-}" == "true" ]]; then
    flags+=(--noshow_progress --curses=no --color=no --show_timestamps)
  fi
  say "bazel: build examples/consumer_bazel (output base $output_base)"
  local status=0 bin
  (cd examples/consumer_bazel && bazel --output_base="$output_base" build "${flags[@]}" //... </dev/null) || status=$?
  bin=$(cd examples/consumer_bazel && bazel --output_base="$output_base" info bazel-bin 2>/dev/null </dev/null) || status=$?
  # One more Bazel server would otherwise stay up for hours.
  (cd examples/consumer_bazel && bazel --output_base="$output_base" shutdown </dev/null) || true
  [[ $status -eq 0 ]] || fail "bazel build of examples/consumer_bazel (status $status)"

  run pmr_example "$bin/pmr_example"
  run cache_example "$bin/cache_example"
  run malloc_example "$bin/malloc_example"
  # malloc = links the shim into the program itself. (Outputs are captured
  # before grep reads them: `cmd | grep -q` fails under pipefail when grep
  # quits early and cmd dies of SIGPIPE.)
  local libs
  libs=$(ldd "$bin/malloc_example") || fail "ldd malloc_example"
  if grep dropalloc <<<"$libs"; then
    fail "malloc_example needs a dropalloc shared library at run time (above)"
  fi
}

cmake_consumers() {
  local build="$work/cmake-build" prefix="$work/prefix" lib libs
  say "cmake: configure, build and install dropalloc into $prefix"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDROPALLOC_WERROR=ON >/dev/null ||
    fail "cmake configure"
  cmake --build "$build" -j "$(nproc)" || fail "cmake --build"
  rm -rf "$prefix"
  cmake --install "$build" --prefix "$prefix" >/dev/null || fail "cmake --install"

  lib="$prefix/lib/libdropalloc.so.$version"
  for f in "$lib" "$prefix/lib/$soname" "$prefix/lib/libdropalloc.so" "$prefix/lib/libdropalloc.a" \
           "$prefix/lib/cmake/dropalloc/dropalloc-config.cmake" "$prefix/lib/pkgconfig/dropalloc.pc" \
           "$prefix/include/allocator/dropalloc.h" "$prefix/include/allocator/dropalloc_c.h"; do
    [[ -e "$f" ]] || fail "not installed: ${f#"$prefix"/}"
  done
  local got
  got=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
  [[ "$got" == "$soname" ]] || fail "SONAME of the installed library is '$got', expected $soname"
  say "SONAME $got"
  # The version script keeps the core's C++ symbols inside.
  local exported
  exported=$(nm -D --defined-only "$lib") || fail "nm -D $lib"
  if grep ' _ZN9dropalloc' <<<"$exported"; then
    fail "libdropalloc.so exports C++ symbols (above)"
  fi
  for sym in malloc free dropalloc_version dropalloc_create; do
    grep -q " T $sym\$" <<<"$exported" || fail "libdropalloc.so does not export $sym"
  done
  got=$(LD_PRELOAD="$lib" DROPALLOC_VERBOSE=1 /bin/true 2>&1 >/dev/null)
  grep -q "(dropalloc $version)" <<<"$got" || fail "the verbose banner does not name $version: $got"

  say "cmake: examples/consumer_cmake with find_package(dropalloc)"
  rm -rf "$work/consumer-cmake"
  cmake -S examples/consumer_cmake -B "$work/consumer-cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null ||
    fail "configure examples/consumer_cmake"
  cmake --build "$work/consumer-cmake" || fail "build examples/consumer_cmake"
  run drop_and_rebuild "$work/consumer-cmake/drop_and_rebuild"
  run linked_malloc "$work/consumer-cmake/linked_malloc"

  # The install is relocatable: the .pc file finds its prefix from where it is.
  say "pkg-config: examples/consumer_pkgconfig against the prefix, moved"
  rm -rf "$work/moved-prefix" "$work/consumer-pkgconfig"
  cp -a "$prefix" "$work/moved-prefix"
  cp -r examples/consumer_pkgconfig "$work/consumer-pkgconfig"
  got=$(PKG_CONFIG_PATH="$work/moved-prefix/lib/pkgconfig" pkg-config --modversion dropalloc) ||
    fail "pkg-config does not find dropalloc"
  [[ "$got" == "$version" ]] || fail "pkg-config --modversion dropalloc says $got, expected $version"
  PKG_CONFIG_PATH="$work/moved-prefix/lib/pkgconfig" make -s -C "$work/consumer-pkgconfig" ||
    fail "build examples/consumer_pkgconfig"
  libs=$(ldd "$work/consumer-pkgconfig/blocks") || fail "ldd blocks"
  grep -q "=> $work/moved-prefix/.*/$soname " <<<"$libs" ||
    fail "blocks does not load $soname from the moved prefix: $(grep dropalloc <<<"$libs")"
  run blocks "$work/consumer-pkgconfig/blocks"
}

for step in "${steps[@]}"; do
  case "$step" in
    bazel) bazel_consumer ;;
    cmake) cmake_consumers ;;
  esac
done
say "all passed (${steps[*]})"
