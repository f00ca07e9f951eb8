// What held in the thirteenth round: the monitor's readings at their edges
// (limit 0, usage above the limit, garbage and missing files, v2 with
// memory.high only, ancestors vanishing), option checks (infinities,
// denormals, a moved-from target), exceptions from cap() and held(), and
// keepers made and destroyed while caps and budgets change under readers.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

namespace {

using namespace attack13;
constexpr std::uint64_t MiB = 1ull << 20;


}  // namespace

TEST_CASE("readings: limit 0, usage above the limit, garbage and missing files") {
  const std::string d = make_tmpdir();
  dropalloc::pressure_thresholds t{0.95, 0.90, 10, 0.05};

  v1(d, 5 * MiB, 0);  // a limit of 0: full from the first byte
  {
    dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, d, {}});
    dropalloc::pressure_reading r;
    REQUIRE(m.read(&r));
    auto s = m.assess(r, t);
    MESSAGE("limit 0, usage 5 MiB: shed " << s.bytes);
    CHECK(s.bytes == 5 * MiB);
  }
  v1(d, 20 * MiB, 10 * MiB);  // usage above the limit (v1 can show this briefly)
  {
    dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, d, {}});
    dropalloc::pressure_reading r;
    REQUIRE(m.read(&r));
    auto s = m.assess(r, t);
    CHECK(s.bytes == 20 * MiB - 9 * MiB);
  }
  // A monitor that chose this cgroup, whose files then turn to garbage.
  v1(d, 5 * MiB, 10 * MiB);
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, d, {}});
  REQUIRE(m.source() == dropalloc::pressure_source::cgroup_v1);
  dropalloc::pressure_reading r;
  put(d, "memory.usage_in_bytes", "garbage\n");
  CHECK(!m.read(&r));  // an unreadable usage is no reading, not a number
  put(d, "memory.usage_in_bytes", "");
  CHECK(!m.read(&r));
  put(d, "memory.usage_in_bytes", "1000");
  put(d, "memory.limit_in_bytes", "garbage");
  CHECK(!m.read(&r));  // no limit that can be read: nothing to judge against
  put(d, "memory.limit_in_bytes", 10 * MiB);
  put(d, "memory.usage_in_bytes", "-5");  // never written by a kernel
  if (m.read(&r)) MESSAGE("usage \"-5\" reads as " << r.usage << " (strtoull negates; >= 2^62 is taken as 'max')");
  // A monitor made while the files are garbage takes no cgroup signal.
  put(d, "memory.usage_in_bytes", "garbage\n");
  dropalloc::pressure_monitor m2(dropalloc::os::memory_cgroup{1, d, {}});
  CHECK(m2.source() != dropalloc::pressure_source::cgroup_v1);
}

TEST_CASE("v2 with memory.high only is a limit; memory.max above it is not the one used") {
  const std::string d = make_tmpdir();
  put(d, "memory.current", 97 * MiB);
  put(d, "memory.max", "max\n");
  put(d, "memory.high", 100 * MiB);
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{2, d, {}});
  CHECK(m.source() == dropalloc::pressure_source::cgroup_v2);
  dropalloc::pressure_reading r;
  REQUIRE(m.read(&r));
  CHECK(r.limit == 100 * MiB);
  CHECK(m.assess(r, {0.95, 0.90, 10, 0.05}).bytes == 7 * MiB);
  put(d, "memory.max", 200 * MiB);
  REQUIRE(m.read(&r));
  CHECK(r.limit == 100 * MiB);
}

TEST_CASE("an ancestor that vanishes mid-run: the others are still read") {
  const std::string root = make_tmpdir();
  const std::string p = root + "/p", c = p + "/c";
  v1(p, 50 * MiB, 100 * MiB);
  v1(c, 10 * MiB, 1000 * MiB);
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, c, root});
  dropalloc::pressure_reading r;
  REQUIRE(m.read(&r));
  CHECK(r.limit == 100 * MiB);
  // The parent's files go (it cannot really go with a child in it, but its
  // files can be unreadable): the child's limit is what is left.
  unlink((p + "/memory.usage_in_bytes").c_str());
  REQUIRE(m.read(&r));
  CHECK(r.limit == 1000 * MiB);
  CHECK(r.usage == 10 * MiB);
}

TEST_CASE("option checks: infinities and NaN refused, a moved-from target refused") {
  dropalloc::cache<int> c;
  const dropalloc::os::memory_cgroup none{};
  auto make = [&](dropalloc::headroom_options o) {
    dropalloc::headroom_keeper k(dropalloc::pressure_monitor(none), dropalloc::shed_coldest(c), o);
  };
  const double inf = std::numeric_limits<double>::infinity();
  dropalloc::headroom_options o;
  o.thresholds.high = inf;
  CHECK_THROWS_AS(make(o), std::invalid_argument);
  o = {};
  o.thresholds.low = -inf;
  CHECK_THROWS_AS(make(o), std::invalid_argument);
  o = {};
  o.thresholds.psi_fraction = inf;
  CHECK_THROWS_AS(make(o), std::invalid_argument);
  o = {};
  o.thresholds.psi_fraction = std::nan("");
  CHECK_THROWS_AS(make(o), std::invalid_argument);
  o = {};
  o.thresholds.psi_avg10 = std::nan("");
  CHECK_THROWS_AS(make(o), std::invalid_argument);
  o = {};
  o.poll = std::chrono::milliseconds::min();
  CHECK_THROWS_AS(make(o), std::invalid_argument);
  // A denormal low watermark and an infinite PSI threshold are odd but
  // meaningful ("shed to nothing", "never on PSI"): accepted, no UB.
  o = {};
  o.thresholds.low = std::numeric_limits<double>::denorm_min();
  CHECK_NOTHROW(make(o));
  o = {};
  o.thresholds.psi_avg10 = inf;
  CHECK_NOTHROW(make(o));

  dropalloc::headroom_target t = dropalloc::shed_coldest(c);
  dropalloc::headroom_target taken = std::move(t);
  CHECK_THROWS_AS(dropalloc::headroom_keeper(dropalloc::pressure_monitor(none), t, {}), std::invalid_argument);
  dropalloc::headroom_options capping;
  capping.cap = true;
  dropalloc::headroom_target no_held = dropalloc::shed_coldest(c);
  no_held.held = nullptr;
  CHECK_THROWS_AS(dropalloc::headroom_keeper(dropalloc::pressure_monitor(none), no_held, capping),
                  std::invalid_argument);
}

TEST_CASE("exceptions from cap() and held() are counted; the keeper polls on and stops") {
  const std::string d = make_tmpdir();
  v1(d, 98 * MiB, 100 * MiB);
  std::atomic<int> shed_calls{0};
  dropalloc::headroom_target t;
  t.shed = [&](const dropalloc::shed_request&) -> std::uint64_t {
    shed_calls.fetch_add(1);
    return 4096;
  };
  t.cap = [](const void*, std::uint64_t) { throw std::runtime_error("cap failed"); };
  t.held = []() -> std::uint64_t { throw 42; };
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(1);
  o.cap = true;
  dropalloc::headroom_keeper k(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, d, {}}), t, o);
  REQUIRE(wait_until([&] { return k.errors() >= 5; }));
  MESSAGE("errors " << k.errors() << ", last: " << k.last_error());
  CHECK(k.last_error() == "an exception that is not a std::exception");  // held() throws first
  CHECK(shed_calls.load() >= 5);
}

TEST_CASE("same-name caps and budgets racing with builds and keepers made and destroyed") {
  const std::string d = make_tmpdir();
  v1(d, 98 * MiB, 100 * MiB);
  dropalloc::cache_options co;
  co.byte_budget = 256 * 1024;
  dropalloc::cache<int> c(co);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrong{0};
  std::vector<std::thread> th;
  for (int i = 0; i < 2; ++i) {
    th.emplace_back([&, i] {
      unsigned x = 12345u + i;
      while (!stop.load()) {
        x = x * 1103515245u + 12345u;
        int k = static_cast<int>(x >> 20) % 200;
        std::string v = c.get(k, [k] { return std::string(1000 + 37 * k, static_cast<char>('a' + k % 26)); });
        if (v != std::string(1000 + 37 * k, static_cast<char>('a' + k % 26))) wrong.fetch_add(1);
      }
    });
  }
  th.emplace_back([&] {
    int who = 0;
    std::uint64_t n = 1;
    while (!stop.load()) {
      c.set_pressure_cap(&who, (n++ % 5) * 40000);  // 0 every fifth: lifted
      c.set_byte_budget((n % 3) * 100000);
    }
    c.set_pressure_cap(&who, 0);
  });
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(1);
  o.cap = true;
  auto t = dropalloc::shed_coldest(c);
  for (int round = 0; round < 100; ++round) {
    dropalloc::headroom_keeper k(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{1, d, {}}), t, o);
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 4));
  }
  stop.store(true);
  for (auto& x : th) x.join();
  MESSAGE("wrong values served: " << wrong.load() << ", cap left " << c.pressure_cap());
  CHECK(wrong.load() == 0);
  CHECK(c.pressure_cap() == 0);  // every keeper lifted its cap, the racing name lifted its own
  c.clear();
  CHECK(c.bytes_live() == 0);
}
