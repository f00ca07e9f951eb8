// pressure_monitor::read() reports only the limited cgroup with the highest
// usage/limit share, and assess() asks for that cgroup's usage minus its low
// watermark. When a parent is also above its high watermark but needs more
// bytes back than the (fuller) child, the shed brings the child to its low
// watermark and leaves the parent between its watermarks: below high, so no
// further shed comes, and the parent's neighbours get less room than the
// policy (shed down to the low watermark) promises.
// Fixed: assess() asks for the most that any limit above its high watermark
// needs to come down to its low one.
#include <doctest/doctest.h>

#include <string>

#include "allocator/cache/pressure.h"
#include "tests/attack13/common.h"

TEST_CASE("a parent above its high watermark is shed only as far as the fuller child needs") {
  using namespace attack13;
  constexpr std::uint64_t MiB = 1ull << 20;
  const std::string root = make_tmpdir();
  const std::string parent = root + "/p", child = parent + "/c";
  // Parent 96% of 1 GiB (above 95%: needs 96% - 90% = ~61 MiB back);
  // child 97% of 256 MiB (needs 7% = ~18 MiB back). The child is fuller.
  v1(parent, 983 * MiB, 1024 * MiB);
  v1(child, 249 * MiB, 256 * MiB);
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, child, root});
  dropalloc::pressure_thresholds t{0.95, 0.90, 10, 0.05};
  dropalloc::pressure_reading r;
  REQUIRE(m.read(&r));
  auto s = m.assess(r, t);
  const std::uint64_t parent_needs = 983 * MiB - static_cast<std::uint64_t>(1024.0 * MiB * 0.90);
  MESSAGE("asked to shed " << s.bytes / MiB << " MiB; the parent needs " << parent_needs / MiB
                           << " MiB to reach its low watermark");
  // After shedding what was asked, the parent is below its high watermark:
  const std::uint64_t parent_after = 983 * MiB - s.bytes;
  MESSAGE("parent after the shed: " << parent_after * 100 / (1024 * MiB) << "% (no further shed below 95%)");
  CHECK(s.bytes >= parent_needs);
}
