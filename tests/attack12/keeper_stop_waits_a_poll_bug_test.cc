// ~headroom_keeper() sets a flag and joins a thread that sleeps
// std::this_thread::sleep_for(options_.poll) between polls (headroom.cc,
// watch()): destroying a keeper blocks its caller for up to a whole poll
// interval, whatever is happening. With a poll of a few seconds (a cache
// that need not react fast) a shutdown, or a cache's owner tearing both
// down, hangs that long.
// Fixed: the keeper waits on a condition variable the destructor signals.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/fake_cgroup.h"

TEST_CASE("destroying a keeper with a 30 s poll does not wait out the poll") {
  dropalloc_test::fake_cgroup cg(10, 1000);  // no pressure
  dropalloc::cache<int> c;
  dropalloc::headroom_options o;
  o.poll = std::chrono::seconds(30);
  auto keeper = std::make_unique<dropalloc::headroom_keeper>(dropalloc::pressure_monitor(cg.cgroup()),
                                                             dropalloc::shed_coldest(c), o);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the thread is asleep in its poll
  auto t0 = std::chrono::steady_clock::now();
  keeper.reset();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("~headroom_keeper() took " << ms << " ms");
  CHECK(ms < 15000);  // a hang, not a speed, is what this catches
}
