// shed_coldest() names its cap by a shared_ptr captured in the cap function,
// so every copy of one target caps under the same name. Two keepers built
// from one target (say one on the cgroup, one on PSI) overwrite each other's
// cap, and destroying either lifts the cap under the other, which the fix
// for attack12's finding 1 meant to rule out.
// Fixed: the keeper names its cap itself (headroom_target::cap takes `who`,
// and each keeper passes itself), so copies of one target do not share a cap.
#include <doctest/doctest.h>

#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

TEST_CASE("two keepers from one copied target: destroying one lifts the other's cap") {
  using namespace attack13;
  constexpr std::uint64_t kLimit = 1ull << 30;
  const std::string a = make_tmpdir(), b = make_tmpdir();
  v1(a, kLimit, kLimit);
  v1(b, kLimit, kLimit);
  dropalloc::cache<int> c;
  for (int k = 0; k < 8; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  dropalloc::headroom_target t = dropalloc::shed_coldest(c);  // one target, used twice
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(1);
  o.cap = true;
  dropalloc::headroom_options slow = o;
  slow.poll = std::chrono::milliseconds(500);  // does not re-cap within the check
  dropalloc::headroom_keeper second(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, b, {}}), t, slow);
  REQUIRE(wait_until([&] { return second.sheds() != 0; }));
  {
    dropalloc::headroom_keeper first(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, a, {}}), t, o);
    REQUIRE(wait_until([&] { return first.sheds() != 0; }));
  }
  MESSAGE("cap with the second keeper still capping: " << c.pressure_cap());
  CHECK(c.pressure_cap() != 0);
}
