#!/usr/bin/env bash
# Every DROPALLOC_* option as a user sets it: each accepted value is taken
# without a word, each other value gives exactly one warning naming the
# variable and the value and leaves the default in effect, unknown names are
# warned about with the closest option, and DROPALLOC_VERBOSE=1 lists the
# options in effect. Runs /bin/true with libdropalloc.so preloaded.
set -euo pipefail
lib="$TEST_SRCDIR/$TEST_WORKSPACE/allocator/libdropalloc.so"
[[ -f "$lib" ]] || { echo "FAIL: $lib not found" >&2; exit 1; }
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# stderr of /bin/true under the shim with the given environment.
run() { env -i PATH=/usr/bin:/bin LD_PRELOAD="$lib" "$@" /bin/true 2>&1 >/dev/null; }

# listed OUTPUT NAME=VALUE: the verbose listing (one line) holds NAME=VALUE.
listed() { grep -q "^dropalloc: options:.* $2\( \|\$\)" <<<"$1"; }

# accepted NAME VALUE EFFECTIVE: no warning, and the listing shows EFFECTIVE.
accepted() {
  local out
  out=$(run DROPALLOC_VERBOSE=1 "$1=$2")
  grep -q "warning" <<<"$out" && fail "$1=$2 was warned about: $out"
  listed "$out" "$1=$3" || fail "$1=$2: listing lacks $1=$3: $out"
  return 0
}

# rejected NAME VALUE WHAT DEFAULT: one warning, the default in effect.
rejected() {
  local out want
  out=$(run DROPALLOC_VERBOSE=1 "$1=$2")
  want="dropalloc: warning: $1=$2 is not $3; using the default ($4)"
  [[ $(grep -c "warning" <<<"$out") == 1 ]] || fail "$1=$2: not exactly one warning: $out"
  grep -qxF "$want" <<<"$out" || fail "$1=$2: expected '$want' in: $out"
  listed "$out" "$1=$4" || fail "$1=$2: the default $4 is not in effect: $out"
  return 0
}

bool_what="a boolean (1/0/true/false/yes/no/on/off)"
for name in DROPALLOC_STATS DROPALLOC_ABORT_ON_MISUSE DROPALLOC_FORCE_FALLBACK DROPALLOC_DECAY_THREAD; do
  for v in 1 true TRUE yes Yes on ON; do accepted "$name" "$v" on; done
  for v in 0 false False no NO off Off; do accepted "$name" "$v" off; done
done
# Verbose itself: the listing appears exactly when it is on.
for v in 1 true yes on YES; do accepted DROPALLOC_VERBOSE "$v" on; done
for v in 0 false no off; do
  out=$(run "DROPALLOC_VERBOSE=$v")
  [[ -z "$out" ]] || fail "DROPALLOC_VERBOSE=$v printed: $out"
done
out=$(run DROPALLOC_VERBOSE=maybe)
[[ "$out" == "dropalloc: warning: DROPALLOC_VERBOSE=maybe is not $bool_what; using the default (off)" ]] ||
  fail "DROPALLOC_VERBOSE=maybe: $out"

for name in DROPALLOC_ABORT_ON_MISUSE DROPALLOC_FORCE_FALLBACK; do
  for v in maybe 2 y enable " 1" "1 "; do rejected "$name" "$v" "$bool_what" off; done
done
for v in maybe 2 disable; do rejected DROPALLOC_DECAY_THREAD "$v" "$bool_what" on; done
accepted DROPALLOC_STATS classes classes
accepted DROPALLOC_STATS CLASSES classes
for v in maybe 2 class all; do
  rejected DROPALLOC_STATS "$v" "$bool_what or 'classes'" off
done

for v in 0 1 250 3600000; do accepted DROPALLOC_DECAY_MS "$v" "$v"; done
for v in 1k 12x -1 1.5 3600001 " 5" 99999999999999999999999; do
  rejected DROPALLOC_DECAY_MS "$v" "a whole number from 0 to 3600000" 100
done

accepted DROPALLOC_DROPPABLE_RANGE 1024-65536 1024-65536
accepted DROPALLOC_DROPPABLE_RANGE 1k-64K 1024-65536
for v in 1024 abc 64k-1k 1k-2T -; do
  rejected DROPALLOC_DROPPABLE_RANGE "$v" "a size range such as 1024-65536 (k/M/G suffixes allowed)" unset
done

# One warning per variable, however often the library reads it.
out=$(run DROPALLOC_STATS=maybe)
[[ "$out" == "dropalloc: warning: DROPALLOC_STATS=maybe is not $bool_what or 'classes'; using the default (off)" ]] ||
  fail "DROPALLOC_STATS=maybe without verbose: $out"

# Unknown names: with the closest option when it looks like a typo.
out=$(run DROPALLOC_STAT=1)
[[ "$out" == "dropalloc: warning: DROPALLOC_STAT is not a dropalloc option (did you mean DROPALLOC_STATS?); ignored" ]] ||
  fail "DROPALLOC_STAT=1: $out"
out=$(run DROPALLOC_VERBSOE=1 DROPALLOC_DECAYMS=5)
grep -qxF "dropalloc: warning: DROPALLOC_VERBSOE is not a dropalloc option (did you mean DROPALLOC_VERBOSE?); ignored" \
  <<<"$out" || fail "DROPALLOC_VERBSOE: $out"
grep -qxF "dropalloc: warning: DROPALLOC_DECAYMS is not a dropalloc option (did you mean DROPALLOC_DECAY_MS?); ignored" \
  <<<"$out" || fail "DROPALLOC_DECAYMS: $out"
out=$(run DROPALLOC_FOO=1)
[[ "$out" == "dropalloc: warning: DROPALLOC_FOO is not a dropalloc option (README.md lists them); ignored" ]] ||
  fail "DROPALLOC_FOO=1: $out"
# Names for test harnesses, and no DROPALLOC_ variable at all: silence.
out=$(run DROPALLOC_TEST_ANYTHING=1)
[[ -z "$out" ]] || fail "DROPALLOC_TEST_ANYTHING=1 printed: $out"
out=$(run)
[[ -z "$out" ]] || fail "no option set, yet printed: $out"

# DROPALLOC_STATS at exit: the report, per size class with 'classes'.
out=$(run DROPALLOC_STATS=1)
for want in "statistics: pid " " s after start, every heap of the process" "heap malloc: ordinary" \
  "  live " "  address space " "(peak " "  metadata " "process: resident " "metadata: block states"; do
  grep -qF -- "$want" <<<"$out" || fail "DROPALLOC_STATS=1 lacks '$want': $out"
done
grep -q "size classes" <<<"$out" && fail "DROPALLOC_STATS=1 printed size classes"
out=$(run DROPALLOC_STATS=classes)
grep -q "^size classes with arenas:" <<<"$out" || fail "DROPALLOC_STATS=classes lacks the classes: $out"

# The full listing, as README.md shows it.
out=$(run DROPALLOC_VERBOSE=1)
echo "$out"
[[ $(grep -c "^dropalloc: options:" <<<"$out") == 1 ]] || fail "not one listing line: $out"
for name in VERBOSE STATS ABORT_ON_MISUSE FORCE_FALLBACK DECAY_MS DECAY_THREAD DROPPABLE_RANGE; do
  [[ $(grep -o " DROPALLOC_$name=" <<<"$out" | wc -l) == 1 ]] || fail "listing lacks DROPALLOC_$name once"
done
# A test hook appears only when set.
grep -q "DROPALLOC_TEST_DROPPABLE_ERRNO" <<<"$out" && fail "the unset test hook is listed"
out=$(run DROPALLOC_VERBOSE=1 DROPALLOC_TEST_DROPPABLE_ERRNO=0)
listed "$out" DROPALLOC_TEST_DROPPABLE_ERRNO=0 || fail "the set test hook is not listed: $out"

if ((failures > 0)); then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "PASS"
