// The secondary cache under a real memory cgroup limit (64 MiB) in a forked
// child: 192 MiB of 4 KiB blocks are offered to it, then every key is looked
// up. Nothing served may be wrong and the child must not be OOM-killed; with
// budget=kernel the kernel must have dropped blocks (seen as misses), with
// budget=pressure the cache must have shed blocks itself.
#include <doctest/doctest.h>

#include <string>

#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"
#include "tests/cgroup_child.h"

namespace {

using dropalloc::rocks::budget_mode;
using dropalloc::rocks::secondary_cache;
using namespace dropalloc::rocks::testing;

constexpr std::uint64_t kLimit = 64ull << 20;
constexpr int kBlocks = 192 * 256;  // 192 MiB of 4 KiB blocks

struct outcome {
  std::uint64_t hits, wrong, drops, evictions, inserts;
};

outcome fill_and_read(budget_mode budget) {
  dropalloc::rocks::secondary_cache_options o;
  o.budget = budget;
  secondary_cache c(o);
  for (int i = 0; i < kBlocks; ++i) {
    std::string key = "block" + std::to_string(i);
    std::string v = value_for(key, 4096);
    if (!c.Insert(key, &v, &kHelper).ok()) _exit(5);
  }
  outcome r{};
  for (int i = 0; i < kBlocks; ++i) {
    std::string key = "block" + std::to_string(i);
    bool in_sec = false;
    auto h = c.Lookup(key, create_string(), true, false, in_sec);
    if (!h) continue;
    std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
    ++r.hits;
    if (*got != value_for(key, 4096)) ++r.wrong;
  }
  auto st = c.stats();
  r.drops = st.drops_detected;
  r.evictions = st.evictions;
  r.inserts = st.inserts;
  return r;
}

}  // namespace

TEST_CASE("budget=kernel in a 64 MiB cgroup: the kernel drops blocks, none is served wrong") {
  auto run = dropalloc::testing::run_in_child_cgroup<outcome>("rocksdb-sec-kernel", kLimit,
                                                             [] { return fill_and_read(budget_mode::kernel); });
  if (!dropalloc::testing::child_ran_cleanly(run)) return;
  const outcome& r = run.result;
  MESSAGE(r.inserts << " inserts, " << r.hits << " hits, " << r.drops << " drops detected");
  CHECK(r.wrong == 0);
  CHECK(r.drops > 0);
  CHECK(r.hits < static_cast<std::uint64_t>(kBlocks));  // 192 MiB cannot all stay in 64
}

TEST_CASE("budget=pressure in a 64 MiB cgroup: the cache sheds blocks itself, none is served wrong") {
  auto run = dropalloc::testing::run_in_child_cgroup<outcome>("rocksdb-sec-pressure", kLimit,
                                                             [] { return fill_and_read(budget_mode::pressure); });
  if (!dropalloc::testing::child_ran_cleanly(run)) return;
  const outcome& r = run.result;
  MESSAGE(r.inserts << " inserts, " << r.hits << " hits, " << r.evictions << " shed, " << r.drops
                    << " drops detected");
  CHECK(r.wrong == 0);
  CHECK(r.evictions > 0);
  CHECK(r.hits > 0);
}
