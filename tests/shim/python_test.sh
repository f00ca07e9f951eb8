#!/usr/bin/env bash
# Part of CPython's own test suite, with and without the shim.
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/shim/compare_lib.sh"
PY=/usr/bin/python3
[[ -x "$PY" ]] || { echo "SKIPPED: $PY is not installed (scripts/setup.sh installs python3)"; exit 0; }
if ! "$PY" -c 'import test.test_json' 2>/dev/null; then
  echo "SKIPPED: CPython's test suite is not installed (Debian: libpython3.11-testsuite, from scripts/setup.sh)"
  exit 0
fi

# CPython's tests check that child interpreters print nothing on stderr.
SHIM_VERBOSE=0
shim_probe() { "$PY" -c 'import ctypes; print(ctypes.CDLL(None).dropalloc_shim_active())'; }

workload() {
  "$PY" -m test test_dict test_json test_list test_set test_re test_sort test_struct \
    test_weakref test_tuple
}

# Timings, load averages and slow-test notes change from run to run (a test
# that took 30 s or more is named, with its result, on the next progress line).
normalize() {
  sed -E -e 's/^[0-9]+:[0-9]{2}:[0-9]{2} load avg: [0-9.]+ //' \
    -e 's/^(\[[0-9]+\/[0-9]+\] test_[a-z_]+) -- test_[a-z_]+ [a-z ]+$/\1/' \
    -e '/^Total duration:/d' -e 's/ in [0-9.]+ (sec|ms|min)//' -e 's/ \([0-9.]+ (sec|ms)\)//'
}

compare_runs python
