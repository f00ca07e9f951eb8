// headroom_options::look_ahead (on by default) adds to the usage read now
// what the cgroup "grew by" since the last poll, measured against
// expected = usage - freed (headroom.cc:31, 47). When the bytes a shed
// frees do not leave the cgroup in full (pages still shared with live
// blocks, memory kept by the allocator, a neighbour taking the room), usage
// stays above `expected` and the difference is taken for growth: every poll
// then judges the cgroup fuller than it is, sheds again, and lowers
// `expected` further. Usage held steady *below* the high watermark is
// enough for the keeper to empty the cache.
//
// Sequence (fake cgroup, 10 MiB limit, cache holding 8 MiB): usage 96%
// (above the 95% watermark) until the first shed, then 93% and steady.
// Fixed: the keeper reads the usage again after a shed and measures the next
// poll's growth from there.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/fake_cgroup.h"

namespace {

std::uint64_t run(bool look_ahead, std::uint64_t* before) {
  constexpr std::uint64_t kLimit = 10ull << 20;
  dropalloc::cache<int> c;
  for (int k = 0; k < 2000; ++k) c.get(k, [] { return std::string(4096, 'v'); });
  *before = c.bytes_live();
  dropalloc_test::fake_cgroup cg(kLimit / 100 * 96, kLimit);
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(20);
  o.look_ahead = look_ahead;
  dropalloc::headroom_keeper keeper(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), o);
  while (keeper.sheds() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  cg.set_usage(kLimit / 100 * 93);  // below the high watermark from now on
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  MESSAGE("look_ahead=" << look_ahead << ": sheds " << keeper.sheds() << ", shed " << keeper.bytes_shed()
                        << " B of " << *before << ", left " << c.bytes_live());
  return c.bytes_live();
}

}  // namespace

TEST_CASE("usage steady below the high watermark: the keeper stops shedding") {
  std::uint64_t before = 0;
  std::uint64_t left = run(false, &before);
  CHECK(left > before / 2);  // control: without look-ahead
  left = run(true, &before);
  CHECK(left > before / 2);  // the default
}
