#!/usr/bin/env bash
# The allocation and free fast paths stay within a stated instruction budget.
# Counted statically with objdump over each fast path compiled alone (probe.cc,
# -O2 as in an optimised build): every instruction of the function, early
# exits to the slow path included. A change that grows a fast path past its
# budget fails here; raise the budget only with a measurement that says the
# growth is worth it.
set -euo pipefail
probe="$TEST_SRCDIR/$TEST_WORKSPACE/tests/fastpath/probe"

# Budgets: the counts when they were set (g++ 12, x86-64: 42, 42 and 107),
# plus a little room. The free path is the longer: it finds the block's arena
# through the address map inside a read section (allocator/core/grace.h) and
# frees by compare-and-exchange, so that a double or foreign free is refused.
# It was 179 before its read section became fast_read_section (a thread
# without a slot, or already inside a section, takes the slow path) and its
# redundant span check went. The allocation paths grew from 42 to 45 when they
# stopped prefetching the next block of the page-sized class (one compare):
# a malloc(4096)/free loop went from about 120 to 20-27 ns a pair, because a
# prefetch of a page never faulted in costs a failed page walk every call.
# The free path grew from 107 to 145 when a thread's own blocks began to be
# freed with a plain store while its tag is biased (allocator/core/tag_bias.h,
# with the guard against a signal handler inside the free): more
# instructions, but none of them the locked exchange that was most of a
# free's time (alternated runs: 64 malloc/free pairs LIFO 690 -> 510 ns,
# glibc_simple 0.31 -> 0.22 s). It grew from 145 to 150 when it began to
# ask for the state's cache line for writing before reading it (prefetchw,
# on CPUs that report it: a load and a branch on the CPU check, then the
# hint): a block another thread allocated then costs one line transfer, not
# two (alternated runs, 3-4 each: larson 0.397 -> 0.369 s and 0.438 -> 0.408
# s, xmalloc 0.160 -> 0.153 s, rptest 0.168 -> 0.163 s; glibc_simple,
# cfrac_like and mstress within the noise). The allocation paths grew from 45
# to 52 when they began to serve the thread-cached classes above 4 KiB (up to
# 64 KiB: a second table lookup, on a branch small sizes do not take; before,
# those sizes went through the out-of-line slow path on every allocation):
# a malloc(16384)/free loop 20 -> 7 ns a pair, rptest 0.157 -> 0.140 s
# (7 alternated runs each); glibc_simple and xmalloc unchanged.
# The free path grew from 150 to 161 when the address map gained its fold
# (allocator/core/segment.h): one load finds the arena where the table took
# two dependent ones, at the price of a range check and, on the path taken
# for addresses outside the fold, the table's lookup as before (inline: out
# of line, its call made every free save registers). Alternated runs, fastest
# of 5 each (bench/alloc_micro, time per iteration): pmr lifo_64B 481 ->
# 452 ns, batch_64B 38.4 -> 36.4 us, batch_mixed 994 -> 883 us; preloaded
# lifo_64B 443 -> 432 ns; a check of a one-page block 3.74 -> 3.44 ns
# (seal_check_micro check_hot/64B, 8 runs). Macro workloads: no change
# visible (5 runs each).
declare -A budget=([dropalloc_probe_allocate]=54 [dropalloc_probe_malloc]=54 [dropalloc_probe_free]=164)

if ! command -v objdump >/dev/null; then
  echo "FAIL: objdump (binutils) is not installed" >&2
  exit 1
fi
listing=$(objdump -d --no-show-raw-insn "$probe")
status=0
for fn in dropalloc_probe_allocate dropalloc_probe_malloc dropalloc_probe_free; do
  body=$(awk -v fn="<$fn>:" '$2 == fn {on = 1; next} on && /^$/ {exit} on' <<<"$listing")
  body=$(grep -v -E '\s(nop|xchg +%ax,%ax)' <<<"$body" || true)  # alignment padding is not executed
  count=$(grep -c . <<<"$body" || true)
  echo "$fn: $count instructions (budget ${budget[$fn]})"
  if [[ "$count" -eq 0 ]]; then
    echo "FAIL: $fn not found in the probe's disassembly" >&2
    status=1
  elif [[ "$count" -gt "${budget[$fn]}" ]]; then
    echo "FAIL: $fn has $count instructions, over its budget of ${budget[$fn]}:" >&2
    echo "$body" >&2
    status=1
  fi
done
exit $status
