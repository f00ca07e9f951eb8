// invalid_thresholds() accepts psi_avg10 = 0 (">= 0"), and assess() sheds
// when the stall percent is >= the threshold. A stall of 0% is >= 0, so with
// psi_avg10 = 0 (read by many as "off", as 0 is for byte_budget and for a
// pressure cap) the keeper sheds psi_fraction of the cache on every poll on
// an idle machine, and empties it within about a second. Needs the PSI file
// (/proc/pressure/memory); skipped without it.
#include <doctest/doctest.h>

#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

TEST_CASE("psi_avg10 = 0 is accepted and sheds on every poll with no stall at all") {
  dropalloc::pressure_monitor probe{dropalloc::os::memory_cgroup{}};
  if (probe.source() != dropalloc::pressure_source::psi) {
    MESSAGE("skipped: " << probe.description());
    return;
  }
  dropalloc::cache<int> c;
  for (int k = 0; k < 1000; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  const std::uint64_t before = c.bytes_live();
  dropalloc::headroom_options o;
  o.thresholds.psi_avg10 = 0;
  std::uint64_t sheds = 0;
  {
    dropalloc::headroom_keeper k(dropalloc::pressure_monitor{dropalloc::os::memory_cgroup{}}, dropalloc::shed_coldest(c),
                                 o);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    sheds = k.sheds();
  }
  MESSAGE("psi_avg10 = 0, 1 s: sheds " << sheds << ", cache left " << c.bytes_live() * 100 / before << "%");
  CHECK(sheds <= 1);
}
