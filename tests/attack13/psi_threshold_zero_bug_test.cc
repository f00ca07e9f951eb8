// invalid_thresholds() accepts psi_avg10 = 0 (">= 0"), and assess() sheds
// when the stall percent is >= the threshold. A stall of 0% is >= 0, so with
// psi_avg10 = 0 (read by many as "off", as 0 is for byte_budget and for a
// pressure cap) the keeper sheds psi_fraction of the cache on every poll on
// an idle machine, and empties it within about a second. Needs the PSI file
// (/proc/pressure/memory); skipped without it.
// Fixed: psi_avg10 must be > 0; 0 is refused with std::invalid_argument.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

TEST_CASE("psi_avg10 = 0 is refused, saying why") {
  dropalloc::cache<int> c;
  dropalloc::headroom_options o;
  o.thresholds.psi_avg10 = 0;
  try {
    dropalloc::headroom_keeper k(dropalloc::pressure_monitor{dropalloc::os::memory_cgroup{}}, dropalloc::shed_coldest(c),
                                 o);
    FAIL("accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("psi_avg10") != std::string::npos);
  }
}
