# Sourced by the real-program tests: run one workload twice, once as is and
# once with libdropalloc.so preloaded into every process it starts, and
# require the same output and the same exit status.
#
#   need_program NAME...      SKIPPED (exit 0) unless each is on PATH
#   compare_runs NAME         runs the shell function `workload` both ways;
#                             define `normalize` (stdin -> stdout) to strip
#                             run-to-run noise such as timings
#
# Proof that the preload took: with SHIM_VERBOSE=1 (default) every preloaded
# process prints a banner, removed before comparing. Programs whose tests
# inspect their children's stderr set SHIM_VERBOSE=0 and define `shim_probe`,
# which must print 1 when run with the shim preloaded.
set -euo pipefail

SHIM_LIB="$TEST_SRCDIR/$TEST_WORKSPACE/allocator/libdropalloc.so"
BANNER='^dropalloc: LD_PRELOAD shim active'
OPTIONS_LINE='^dropalloc: options: '  # follows the banner with DROPALLOC_VERBOSE=1
SHIM_VERBOSE=1
export LC_ALL=C TZ=UTC

need_program() {
  local p
  for p in "$@"; do
    if ! command -v "$p" >/dev/null 2>&1; then
      # scripts/setup.sh installs every program these tests use; a machine
      # without it says so instead of passing silently.
      echo "SKIPPED: '$p' is not installed (scripts/setup.sh installs it)"
      exit 0
    fi
  done
}

normalize() { cat; }

run_one() {  # run_one DIR PRELOAD(0|1) -> DIR/out, DIR/status
  local dir="$1" preload="$2" status=0
  rm -rf "$dir"
  mkdir -p "$dir/work" "$dir/tmp"
  (
    cd "$dir/work"
    # The workload decides its own status, as a script run by a user would.
    set +e +o pipefail
    export TMPDIR="$dir/tmp" HOME="$dir/work"
    if [[ "$preload" == 1 ]]; then
      export LD_PRELOAD="$SHIM_LIB"
      if [[ "$SHIM_VERBOSE" == 1 ]]; then export DROPALLOC_VERBOSE=1; fi
    fi
    workload
  ) >"$dir/raw" 2>&1 || status=$?
  echo "$status" >"$dir/status"
}

compare_runs() {
  local name="$1" base="$TEST_TMPDIR/$1"
  [[ -f "$SHIM_LIB" ]] || { echo "FAIL: $SHIM_LIB not found"; exit 1; }
  run_one "$base/plain" 0
  run_one "$base/shim" 1
  local proof
  if [[ "$SHIM_VERBOSE" == 1 ]]; then
    # Every preloaded process prints the banner once.
    proof=$(grep -c "$BANNER" "$base/shim/raw" || true)
    [[ "$proof" -gt 0 ]] || { echo "FAIL: $name: no banner; the preload did not take"; exit 1; }
    proof="$proof preloaded processes"
  else
    proof=$(cd "$base/shim/work" && LD_PRELOAD="$SHIM_LIB" shim_probe 2>&1 || true)
    [[ "$proof" == 1 ]] || { echo "FAIL: $name: shim_probe printed '$proof', not 1; the preload did not take"; exit 1; }
    proof="shim_probe confirmed the preload"
  fi
  normalize <"$base/plain/raw" >"$base/plain/out"
  grep -v -e "$BANNER" -e "$OPTIONS_LINE" "$base/shim/raw" | normalize >"$base/shim/out" || true
  local ok=1
  if ! diff -u "$base/plain/out" "$base/shim/out" >"$base/diff"; then
    echo "FAIL: $name: output differs with the shim preloaded:"
    head -n 60 "$base/diff"
    ok=0
  fi
  local s_plain s_shim
  s_plain=$(cat "$base/plain/status")
  s_shim=$(cat "$base/shim/status")
  if [[ "$s_plain" != "$s_shim" ]]; then
    echo "FAIL: $name: exit status $s_plain without the shim, $s_shim with it"
    ok=0
  fi
  if [[ "$ok" != 1 ]]; then
    exit 1
  fi
  echo "PASS: $name: same output ($(wc -l <"$base/plain/out") lines) and exit status ($s_plain); $proof"
}
