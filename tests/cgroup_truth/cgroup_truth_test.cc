// Drop truth under a real memory cgroup: whatever the kernel drops, a block
// check() calls intact must hold exactly what was sealed. A child process in
// a fresh child memory cgroup pushes many times the limit through every seal
// path, and the test compares every intact block with a checksum kept in
// ordinary memory. Where no cgroup is writable, the test says why and skips.
//
// Knobs for a longer run by hand (environment, e.g. bazel test --test_env=...):
//   DROPALLOC_TEST_TRUTH_BLOCKS       fresh blocks to write (default 1000000)
//   DROPALLOC_TEST_TRUTH_THREADS      writer threads (default 2)
//   DROPALLOC_TEST_TRUTH_LIMIT_MIB    the cgroup's limit (default 64)
//   DROPALLOC_TEST_TRUTH_COTENANT_MIB ordinary memory a neighbour process churns (default 16, 0: none)
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "allocator/dropalloc.h"
#include "tests/cgroup_child.h"
#include "tests/zero_page.h"
#include "tests/cgroup_truth/cotenant.h"
#include "tests/cgroup_truth/launder.h"
#include "tests/cgroup_truth/tally.h"
#include "tests/cgroup_truth/workload.h"

namespace {

using namespace dropalloc::truth;

std::uint64_t knob(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// A sanitizer's shadow is ordinary memory charged to the small cgroup, and it
// is never reclaimed: TSan's is several bytes per byte of droppable memory
// touched. ASan's, an eighth of it, stays free where reads of untouched shadow
// map the shared zero page; on a kernel whose read faults allocate
// (tests/zero_page.h) every checked read of a droppable page pins shadow too,
// and the churn workload, several times the limit, outgrows it.
bool skipped_for_shadow(bool churn) {
#if defined(__SANITIZE_THREAD__)
  (void)churn;
  const char* why = "SKIPPED: under TSan its shadow memory (ordinary memory charged to the cgroup) exceeds the limit";
#elif defined(__SANITIZE_ADDRESS__)
  if (!churn || !dropalloc::testing::reads_allocate_pages()) return false;
  const char* why =
      "SKIPPED: under ASan on a kernel whose read faults allocate pages (no zero page), its shadow of the "
      "droppable memory read (ordinary memory charged to the cgroup) exceeds the limit";
#else
  (void)churn;
  return false;
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  std::printf("%s\n", why);
  MESSAGE(why);
  return true;
#endif
}

// The private fallback's main workload on a kernel whose read faults
// allocate (tests/zero_page.h): its checks and reads of small blocks fault
// reclaimed pages back in as ordinary memory, and a page shared with a free
// or unsealed neighbour cannot be given back to the kernel (that neighbour
// may be written at any moment), so the working set, several times the
// limit, no longer fits it. The seal_all() case below still runs there.
bool skipped_fallback_without_zero_page() {
  if (!dropalloc::testing::reads_allocate_pages()) return false;
  dropalloc::droppable_resource probe;
  if (probe.arena_backing() == dropalloc::backing::droppable) return false;
  const char* why =
      "SKIPPED: private fallback on a kernel whose read faults allocate pages (no zero page): reads of "
      "reclaimed pages shared with free or unsealed blocks pin ordinary memory beyond the limit";
  std::printf("%s\n", why);
  MESSAGE(why);
  return true;
}

template <class Result>
bool ran(const dropalloc::testing::cgroup_run<Result>& run) {
  if (!run.skipped.empty()) std::printf("SKIPPED: %s\n", run.skipped.c_str());
  std::fflush(stdout);
  return dropalloc::testing::child_ran_cleanly(run);
}

struct workload_outcome {
  tally t;
  bool neighbour = false, neighbour_survived = true;
};

struct launder_pair {
  launder_result counted, uncounted;
};

void print_counts(const char* when, const launder_counts& c) {
  std::printf("  %-28s intact %6llu  dropped %6llu  unsealed %4llu  wrong %6llu  bad %llu\n", when,
              static_cast<unsigned long long>(c.intact), static_cast<unsigned long long>(c.dropped),
              static_cast<unsigned long long>(c.unsealed), static_cast<unsigned long long>(c.wrong),
              static_cast<unsigned long long>(c.bad));
}

void print_launder(const char* title, const launder_result& r, bool counted) {
  std::printf("%s: %llu blocks sealed and read back whole (%llu rewrites after a page went before its seal); "
              "seal_all() sealed %llu\n",
              title, static_cast<unsigned long long>(r.blocks), static_cast<unsigned long long>(r.lost_before_seal),
              static_cast<unsigned long long>(r.sealed_by_seal_all));
  if (counted) print_counts("before seal_all():", r.before);
  print_counts("after seal_all():", r.after);
}

}  // namespace

TEST_CASE("under real drops every block check() calls intact holds what was sealed, on every seal path") {
  if (skipped_for_shadow(/*churn=*/true)) return;
  if (skipped_fallback_without_zero_page()) return;
  workload_options o;
  o.blocks = knob("DROPALLOC_TEST_TRUTH_BLOCKS", 1000000);
  o.threads = static_cast<int>(knob("DROPALLOC_TEST_TRUTH_THREADS", 2));
  std::uint64_t limit = knob("DROPALLOC_TEST_TRUTH_LIMIT_MIB", 64) << 20;
  std::size_t neighbour_bytes = knob("DROPALLOC_TEST_TRUTH_COTENANT_MIB", 16) << 20;
  auto run = dropalloc::testing::run_in_child_cgroup<workload_outcome>("dropalloc-truth", limit, [&] {
    workload_outcome r;
    cotenant neighbour(neighbour_bytes);  // forked before any thread starts
    r.neighbour = neighbour.started();
    r.t = run_workload(o);
    r.neighbour_survived = neighbour.stop();
    std::fflush(stdout);
    return r;
  });
  if (!ran(run)) return;
  const tally& t = run.result.t;
  std::printf("cgroup v%d, limit %llu MiB, %d threads, neighbour %s (%zu MiB ordinary memory)%s; OOM kills %llu\n",
              run.cgroup_version, static_cast<unsigned long long>(limit >> 20), o.threads,
              run.result.neighbour ? "on" : "off", neighbour_bytes >> 20,
              run.result.neighbour_survived ? "" : ", NEIGHBOUR DIED",
              static_cast<unsigned long long>(run.state.oom_kills));
  print(stdout, t);
  std::uint64_t drops_seen = t.total(dropped) + t.total_lost_before_seal();
  if (drops_seen == 0) {
    std::printf("NO DROPS SEEN: the kernel dropped nothing we looked at, so this run proved nothing\n");
  }
  std::fflush(stdout);
  CHECK_MESSAGE(t.total(wrong) == 0, "blocks called intact held other bytes than were sealed");
  CHECK(t.total(bad) == 0);
  CHECK_MESSAGE(drops_seen > 0, "no drops seen: the run proved nothing");
  CHECK(t.total_blocks() >= 1000000);
  CHECK(run.state.oom_kills == 0);
}

TEST_CASE("seal_all() vouches for no dropped block: 256 MiB of sealed 16 KiB blocks in a 64 MiB cgroup") {
  if (skipped_for_shadow(/*churn=*/false)) return;
  auto run = dropalloc::testing::run_in_child_cgroup<launder_pair>("dropalloc-truth-sealall", 64ull << 20, [] {
    launder_pair r;
    r.counted = run_launder(256ull << 20, 16 << 10, true);
    r.uncounted = run_launder(256ull << 20, 16 << 10, false);
    return r;
  });
  if (!ran(run)) return;
  const launder_pair& r = run.result;
  std::printf("cgroup v%d, limit 64 MiB, OOM kills %llu\n", run.cgroup_version,
              static_cast<unsigned long long>(run.state.oom_kills));
  print_launder("checked before and after seal_all()", r.counted, true);
  print_launder("seal_all() before any check", r.uncounted, false);
  if (r.counted.before.dropped == 0) {
    std::printf("NO DROPS SEEN before seal_all(): the scenario proved nothing\n");
  }
  std::fflush(stdout);
  CHECK(r.counted.blocks == (256u << 20) / (16u << 10));
  CHECK(r.counted.before.wrong == 0);
  CHECK(r.counted.after.wrong == 0);
  CHECK(r.uncounted.after.wrong == 0);
  CHECK(r.counted.before.bad + r.counted.after.bad + r.uncounted.after.bad == 0);
  CHECK_MESSAGE(r.counted.before.dropped > 0, "no drops seen: the scenario proved nothing");
  CHECK(run.state.oom_kills == 0);
}
