// validate() accepts any poll > 0. watch() passes it to
// condition_variable::wait_for, which converts it to steady_clock's
// nanoseconds and adds it to now(): past ~292 years (e.g.
// std::chrono::milliseconds::max(), the natural "poll as rarely as
// possible") the conversion overflows, the deadline lies in the past, and
// the keeper polls in a busy loop, shedding on every turn.
// Fixed: a poll above 24 h is refused with std::invalid_argument.
#include <doctest/doctest.h>

#include <stdexcept>
#include <atomic>
#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

namespace {

void run(std::chrono::milliseconds poll, const char* what) {
  using namespace attack13;
  const std::string dir = make_tmpdir();
  v1(dir, 1ull << 30, 1ull << 30);  // at the limit: every poll sheds
  std::atomic<std::uint64_t> calls{0};
  dropalloc::headroom_target t;
  t.shed = [&](const dropalloc::shed_request&) -> std::uint64_t {
    calls.fetch_add(1);
    return 0;
  };
  dropalloc::headroom_options o;
  o.poll = poll;
  std::uint64_t n;
  {
    dropalloc::headroom_keeper keeper(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, dir, {}}), t, o);
    std::this_thread::sleep_for(300ms);
    n = calls.load();
  }
  MESSAGE(std::string(what) << ": polls that shed within 300 ms: " << n);
  CHECK(n <= 1);
}

}  // namespace

TEST_CASE("poll = 1 hour: one poll") { run(std::chrono::hours(1), "poll 1 h"); }

TEST_CASE("poll = milliseconds::max() or 300 years: refused, saying why") {
  for (auto poll : {std::chrono::milliseconds::max(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::hours(24 * 365 * 300))}) {
    dropalloc::headroom_target t;
    t.shed = [](const dropalloc::shed_request&) -> std::uint64_t { return 0; };
    dropalloc::headroom_options o;
    o.poll = poll;
    try {
      dropalloc::headroom_keeper keeper(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{}), t, o);
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find("poll") != std::string::npos);
    }
  }
}
