// headroom_options::cap makes the keeper drive the cache's byte budget
// through set_byte_budget(): after a shed it sets held()+1, below the low
// watermark it raises it to held() + (low - usage), and its destructor sets 0
// ("no budget"). None of this looks at the budget the cache's owner set, so
//   1. while the keeper runs, the owner's budget is replaced by a larger one
//      (the cache grows past what its owner allowed), and
//   2. once the keeper is destroyed the cache has no budget at all.
// The same happens between two keepers: the first one destroyed uncaps the
// cache under the other.
// Fixed: a keeper caps through cache::set_pressure_cap, its own cap under the
// owner's budget, and lifts only that cap when destroyed.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/fake_cgroup.h"

TEST_CASE("a capping keeper replaces the owner's byte budget and removes it when destroyed") {
  constexpr std::uint64_t kBudget = 64 * 1024;
  constexpr std::uint64_t kLimit = 1ull << 30;
  dropalloc::cache_options opts;
  opts.byte_budget = kBudget;
  dropalloc::cache<int> c(opts);
  for (int k = 0; k < 8; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  REQUIRE(c.bytes_live() <= kBudget);

  dropalloc_test::fake_cgroup cg(kLimit, kLimit);  // at the limit: the keeper sheds, then caps
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(1);
  o.cap = true;
  std::uint64_t while_running = 0;
  {
    dropalloc::headroom_keeper keeper(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), o);
    while (keeper.sheds() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cg.set_usage(kLimit / 10);  // the pressure is gone: room below the low watermark
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    while_running = c.byte_budget();
    // The owner's budget no longer holds: the cache grows past it.
    for (int k = 0; k < 64; ++k) c.get(100 + k, [] { return std::string(4000, 'v'); });
    MESSAGE("owner's budget " << kBudget << ", budget while the keeper runs " << while_running
                              << ", bytes held " << c.bytes_live());
    CHECK(while_running <= kBudget);
    CHECK(c.bytes_live() <= kBudget);
  }
  MESSAGE("budget after the keeper is destroyed: " << c.byte_budget());
  CHECK(c.byte_budget() == kBudget);
}

TEST_CASE("two capping keepers: destroying one uncaps the cache under the other") {
  constexpr std::uint64_t kLimit = 1ull << 30;
  dropalloc::cache<int> c;
  for (int k = 0; k < 8; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  dropalloc_test::fake_cgroup cg(kLimit, kLimit);
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(1);
  o.cap = true;
  // The second keeper polls rarely, so it does not re-cap within the check.
  dropalloc::headroom_options slow = o;
  slow.poll = std::chrono::milliseconds(500);
  dropalloc::headroom_keeper second(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), slow);
  while (second.sheds() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  {
    dropalloc::headroom_keeper first(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), o);
    while (first.sheds() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  MESSAGE("cap with the second keeper still capping: " << c.pressure_cap());
  CHECK(c.pressure_cap() != 0);
}
