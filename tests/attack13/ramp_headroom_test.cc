// Look-ahead in a steady ramp: a neighbour grows by 1% of the limit per poll
// in a fake cgroup whose usage is the neighbour's plus what the cache holds
// (rewritten every 1 ms by a driver thread, and at once after each shed, as
// MADV_DONTNEED uncharges at once). Does the neighbour still find headroom,
// now that growth is measured from the usage re-read after a shed, and does
// the cache keep what the neighbour does not need?
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

namespace {

using namespace attack13;
constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::uint64_t kLimit = 64 * MiB;

struct result {
  std::uint64_t max_usage = 0, ticks_over_limit = 0, ticks_over_high = 0, cache_left = 0, final_usage = 0,
                sheds = 0;
};

result run(bool look_ahead) {
  const std::string d = make_tmpdir();
  dropalloc::cache<int> c;
  for (int k = 0; k < 768; ++k) c.get(k, [] { return std::string(64 * KiB - 64, 'v'); });  // ~48 MiB
  std::mutex mu;
  std::uint64_t neighbour = 8 * MiB;
  result res;
  auto publish = [&] {  // mu held
    std::uint64_t u = neighbour + c.bytes_live();
    v1(d, u, kLimit);
    return u;
  };
  {
    std::lock_guard g(mu);
    publish();
  }
  auto target = dropalloc::shed_coldest(c);
  auto inner = target.shed;
  target.shed = [&, inner](const dropalloc::shed_request& r) {
    std::uint64_t freed = inner(r);
    std::lock_guard g(mu);
    publish();  // the freed pages leave the cgroup at once
    return freed;
  };
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(10);
  o.look_ahead = look_ahead;
  dropalloc::headroom_keeper keeper(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, d, {}}), target, o);
  // 64 KiB per ms: 640 KiB (1% of the limit) per poll, up to 40 MiB.
  while (true) {
    {
      std::lock_guard g(mu);
      if (neighbour >= 40 * MiB) break;
      neighbour += 64 * KiB;
      std::uint64_t u = publish();
      res.max_usage = std::max(res.max_usage, u);
      if (u > kLimit) ++res.ticks_over_limit;
      if (u > kLimit / 100 * 95) ++res.ticks_over_high;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // settle
  {
    std::lock_guard g(mu);
    res.final_usage = publish();
  }
  res.cache_left = c.bytes_live();
  res.sheds = keeper.sheds();
  return res;
}

}  // namespace

TEST_CASE("a steadily growing neighbour gets headroom; the cache keeps the rest") {
  for (bool la : {false, true}) {
    result r = run(la);
    MESSAGE("look_ahead=" << la << ": max usage " << r.max_usage * 100 / kLimit << "% of the limit, ticks over the limit "
                          << r.ticks_over_limit << ", over 95% " << r.ticks_over_high << ", sheds " << r.sheds
                          << ", final usage " << r.final_usage * 100 / kLimit << "%, cache left "
                          << r.cache_left / MiB << " MiB");
    CHECK(r.final_usage <= kLimit / 100 * 95);  // headroom made
    CHECK(r.cache_left >= 8 * MiB);             // and not by emptying the cache (40 MiB neighbour, 64 MiB limit)
  }
}
