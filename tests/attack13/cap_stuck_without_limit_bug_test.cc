// A capping keeper raises its cap only while a poll reads a limit. When the
// limit is lifted (memory.limit_in_bytes set to unlimited) or the cgroup's
// files can no longer be read, every poll returns early (pressure_monitor::read
// returns false) and the cap stays where the last shed left it for as long as
// the keeper lives: the cache is held at a few KiB with no limit in sight.
// Fixed: a poll that finds no limit lifts the keeper's cap.
#include <doctest/doctest.h>

#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

namespace {

constexpr std::uint64_t MiB = 1ull << 20;
constexpr std::uint64_t kUnlimited = 9223372036854771712ull;  // what v1 shows for "no limit"

// Fills the cache, drives a capping keeper into one shed (and cap), then
// calls change(dir); returns the cap and what the cache holds after 64 more
// values of 4000 B.
template <class Change>
void run(const char* what, Change change, bool expect_lifted) {
  using namespace attack13;
  const std::string dir = make_tmpdir();
  v1(dir, 98 * MiB / 10, 10 * MiB);  // 98%: above the high watermark
  dropalloc::cache<int> c;
  for (int k = 0; k < 64; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(2);
  o.cap = true;
  dropalloc::headroom_keeper keeper(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, dir, {}}),
                                    dropalloc::shed_coldest(c), o);
  REQUIRE(wait_until([&] { return keeper.sheds() != 0 && c.pressure_cap() != 0; }));
  const std::uint64_t cap_after_shed = c.pressure_cap();
  change(dir);
  std::this_thread::sleep_for(300ms);  // many polls
  for (int k = 0; k < 64; ++k) c.get(1000 + k, [] { return std::string(4000, 'v'); });
  MESSAGE(std::string(what) << ": cap after the shed " << cap_after_shed << ", cap 300 ms later " << c.pressure_cap()
               << ", cache holds " << c.bytes_live() << " B after 64 new values of 4000 B");
  if (expect_lifted) {
    CHECK(c.bytes_live() >= 64 * 4000);
  }
}

}  // namespace

TEST_CASE("control: the limit raised to 1 GiB, the cap grows with the room") {
  run("limit raised to 1 GiB, usage 1 MiB",
      [](const std::string& d) { attack13::v1(d, 1 * MiB, 1024 * MiB); }, true);
}

TEST_CASE("the limit lifted: the cap stays at what the last shed left") {
  run("limit lifted (unlimited), usage 1 MiB",
      [](const std::string& d) { attack13::v1(d, 1 * MiB, kUnlimited); }, true);
}

TEST_CASE("the cgroup's files vanish: the cap stays at what the last shed left") {
  run("cgroup removed", [](const std::string& d) {
    unlink((d + "/memory.usage_in_bytes").c_str());
    unlink((d + "/memory.limit_in_bytes").c_str());
    rmdir(d.c_str());
  }, true);
}
