// Look-ahead differences the usage of whichever limited cgroup was fullest at
// the previous poll against the usage of whichever is fullest now. When the
// fullest one changes from a small child to its large parent, the parent's
// whole usage minus the child's is taken for one poll's growth, and the
// keeper sheds the cache although neither cgroup came near its watermark.
// Fixed: the keeper keeps an expected usage per limited cgroup and judges
// each one's growth against its own usage and limit.
#include <doctest/doctest.h>

#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

TEST_CASE("look-ahead: the fullest limit moving from child to parent is taken for growth") {
  using namespace attack13;
  constexpr std::uint64_t MiB = 1ull << 20;
  const std::string root = make_tmpdir();
  const std::string parent = root + "/p", child = parent + "/c";
  // Child 85% of 256 MiB (the fullest), parent 80% of 1 GiB: no shed.
  v1(parent, 820 * MiB, 1024 * MiB);
  v1(child, 218 * MiB, 256 * MiB);

  dropalloc::cache<int> c;
  for (int k = 0; k < 256; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  const std::uint64_t before = c.bytes_live();

  dropalloc::headroom_options o;  // look_ahead on (the default)
  o.poll = std::chrono::milliseconds(5);
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, child, root});
  MESSAGE("monitor: " << m.description());
  dropalloc::headroom_keeper keeper(std::move(m), dropalloc::shed_coldest(c), o);
  std::this_thread::sleep_for(300ms);  // many polls on the first state
  REQUIRE(keeper.sheds() == 0);

  // The child frees half its memory; the parent stays at 80%. The parent is
  // now the fullest (0.80 > 0.50), and nothing is near 95% anywhere.
  v1(child, 128 * MiB, 256 * MiB);
  wait_until([&] { return keeper.sheds() != 0; }, 1000ms);
  MESSAGE("child 50% of 256 MiB, parent 80% of 1 GiB: sheds " << keeper.sheds() << ", shed "
                                                               << keeper.bytes_shed() << " B of " << before
                                                               << ", left " << c.bytes_live());
  CHECK(keeper.sheds() == 0);
  CHECK(c.bytes_live() == before);
}
