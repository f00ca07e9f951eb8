#!/usr/bin/env bash
# Builds the fuzz target with clang's libFuzzer plus ASan and UBSan, then runs it.
#
#   tests/fuzz/run_fuzz.sh --bounded        what CI runs: a few thousand inputs
#   tests/fuzz/run_fuzz.sh [libFuzzer args] a long run, e.g.
#       tests/fuzz/run_fuzz.sh -max_total_time=3600 -jobs=2 corpus/
#
# Bazel's toolchain is gcc, which has no libFuzzer, so this compiles the
# allocator's sources directly. Needs Debian's clang and libclang-rt-14-dev
# (scripts/setup.sh installs them). Runs from the repository root or from a
# Bazel runfiles tree.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root="$TEST_SRCDIR/${TEST_WORKSPACE:-dropalloc}"
fi
out=${TEST_TMPDIR:-$(mktemp -d)}

clangxx=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z "$clangxx" ]]; then
  echo "run_fuzz.sh: clang++ not found; install clang and libclang-rt-14-dev (scripts/setup.sh)" >&2
  exit 1
fi

sources=(
  "$root/tests/fuzz/alloc_fuzz.cc"
  "$root"/allocator/core/*.cc
  "$root/allocator/os/linux_os.cc"
  "$root/allocator/os/cgroup.cc"
  "$root/allocator/os/options.cc"
  "$root/allocator/pmr/droppable_resource.cc"
)
"$clangxx" -std=c++20 -O1 -g -Wall -Wextra -Werror -I"$root" \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  "${sources[@]}" -o "$out/alloc_fuzz" -lpthread

if [[ "${1:-}" == "--bounded" ]]; then
  shift
  # Bounded for CI: a fixed number of inputs, no corpus kept. A refused free
  # prints a line; libFuzzer's own output is enough to diagnose a failure.
  set +e
  "$out/alloc_fuzz" -runs=3000 -max_len=4096 -seed=1 -print_final_stats=1 "$@" 2>&1 |
    grep -v "^dropalloc: deallocate"
  exit "${PIPESTATUS[0]}"
fi
exec "$out/alloc_fuzz" -max_len=4096 "$@"
