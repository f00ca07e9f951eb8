#!/usr/bin/env bash
# Installs the Debian packages dropalloc needs, if any are missing.
# Idempotent and silent when everything is already installed.
set -euo pipefail

packages=(
  bazel-bootstrap
  g++
  libjemalloc-dev
  libmimalloc-dev
  doctest-dev
  libbenchmark-dev
  gnuplot-nox
  libtcmalloc-minimal4  # a default contender of bench/compare.py and bench/pressure.py
  # RocksDB 7.8 for the secondary cache (integrations/rocksdb/) and its
  # tools: db_bench runs the plugin in CI and in bench/rocksdb.py.
  librocksdb-dev
  rocksdb-tools
  # Real programs the LD_PRELOAD shim is tested under (tests/shim/).
  sqlite3
  git
  perl
  python3
  libpython3.11-testsuite
  # The CMake build and the example consumers (tests/packaging/consumers.sh).
  cmake
  make
  pkgconf
  clang               # the libFuzzer target (tests/fuzz/run_fuzz.sh)
  libclang-rt-14-dev  # clang's libFuzzer and sanitizer runtimes
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: error: missing Debian packages: ${missing[*]}" >&2
  echo "setup.sh: not running as root and sudo is not available; install them with:" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "setup.sh: installing missing Debian packages: ${missing[*]}" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
