// The headroom keeper and the pressure monitor at their edges: options that
// make no sense, a target that throws, caps beside the owner's budget,
// limits on ancestor cgroups, PSI stall readings and look-ahead.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/fake_cgroup.h"

namespace {

using namespace std::chrono_literals;

using fake_v1_cgroup = dropalloc_test::fake_cgroup;

template <class F>
void wait_until(F done) {
  for (int i = 0; i < 10000 && !done(); ++i) std::this_thread::sleep_for(1ms);
}

}  // namespace

TEST_CASE("a keeper refuses options that make no sense, saying what is wrong") {
  dropalloc::cache<int> c;
  auto refused = [&](dropalloc::headroom_options o, const char* says) {
    try {
      dropalloc::headroom_keeper k(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{}),
                                   dropalloc::shed_coldest(c), o);
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find(says) != std::string::npos);
    }
  };
  dropalloc::headroom_options o;
  o.thresholds.psi_fraction = -0.5;
  refused(o, "psi_fraction");
  o = {};
  o.thresholds.psi_fraction = 2;
  refused(o, "psi_fraction");
  o = {};
  o.thresholds.low = 0.99;  // above high
  refused(o, "low <= high");
  o = {};
  o.thresholds.high = std::nan("");
  refused(o, "watermarks");
  o = {};
  o.thresholds.psi_avg10 = -1;
  refused(o, "psi_avg10");
  o = {};
  o.poll = 0ms;
  refused(o, "poll");
  o = {};
  o.cap = true;
  dropalloc::headroom_target no_cap;
  no_cap.shed = [](const dropalloc::shed_request&) -> std::uint64_t { return 0; };
  CHECK_THROWS_AS(dropalloc::headroom_keeper(dropalloc::pressure_monitor(dropalloc::os::memory_cgroup{}), no_cap, o),
                  std::invalid_argument);
  CHECK(dropalloc::invalid_thresholds({}).empty());
}

TEST_CASE("a target that throws is counted, and the keeper goes on polling") {
  fake_v1_cgroup cg(1000, 1000);  // at the limit: every poll sheds
  dropalloc::headroom_target t;
  std::atomic<int> calls{0};
  t.shed = [&](const dropalloc::shed_request&) -> std::uint64_t {
    calls.fetch_add(1);
    throw std::runtime_error("the shed failed");
  };
  dropalloc::headroom_options o;
  o.poll = 1ms;
  dropalloc::headroom_keeper k(dropalloc::pressure_monitor(cg.cgroup()), t, o);
  wait_until([&] { return calls.load() >= 3; });
  CHECK(calls.load() >= 3);
  CHECK(k.errors() >= 2);
  CHECK(k.last_error() == "the shed failed");
}

TEST_CASE("pressure caps sit under the owner's budget and are lifted one by one") {
  dropalloc::cache_options opts;
  opts.byte_budget = 40 * 1024;
  dropalloc::cache<int> c(opts);
  auto fill = [&](int from) {
    for (int k = from; k < from + 20; ++k) c.get(k, [] { return std::string(4000, 'v'); });
  };
  int a = 0, b = 0;
  c.set_pressure_cap(&a, 1 << 20);  // wider than the budget: the budget still holds
  fill(0);
  CHECK(c.bytes_live() <= opts.byte_budget);
  c.set_pressure_cap(&b, 12 * 1024);
  c.set_pressure_cap(&a, 20 * 1024);
  CHECK(c.pressure_cap() == 12 * 1024);
  fill(100);
  CHECK(c.bytes_live() <= 12 * 1024);
  c.set_pressure_cap(&b, 0);  // b lifts its cap; a's stays
  CHECK(c.pressure_cap() == 20 * 1024);
  fill(200);
  CHECK(c.bytes_live() <= 20 * 1024);
  CHECK(c.bytes_live() > 12 * 1024);
  c.set_pressure_cap(&a, 0);
  CHECK(c.pressure_cap() == 0);
  fill(300);
  CHECK(c.bytes_live() > 20 * 1024);
  CHECK(c.bytes_live() <= opts.byte_budget);
  CHECK(c.byte_budget() == opts.byte_budget);  // never touched
}

TEST_CASE("a cgroup's ancestors up to its hierarchy's root") {
  using dropalloc::os::memory_cgroup;
  auto chain = dropalloc::os::cgroup_and_ancestors(memory_cgroup{1, "/r/mem/a/b", "/r/mem"});
  REQUIRE(chain.size() == 3);
  CHECK(chain[0].dir == "/r/mem/a/b");
  CHECK(chain[1].dir == "/r/mem/a");
  CHECK(chain[1].root == "/r/mem");
  CHECK(chain[2].dir == "/r/mem");  // a container's own cgroup may be mounted there
  CHECK(dropalloc::os::cgroup_and_ancestors(memory_cgroup{1, "/r/mem", "/r/mem"}).size() == 1);
  CHECK(dropalloc::os::cgroup_and_ancestors(memory_cgroup{1, "/r/mem/a/b", {}}).size() == 1);
  CHECK(dropalloc::os::cgroup_and_ancestors(memory_cgroup{2, "/elsewhere/a", "/r/mem"}).size() == 1);
}

TEST_CASE("child_cgroup::open_existing takes only a direct child of our own cgroup") {
  dropalloc::os::memory_cgroup own;
  std::string why;
  if (!dropalloc::os::find_memory_cgroup(&own, &why)) {
    MESSAGE("SKIPPED: " << why);
    return;
  }
  using dropalloc::os::child_cgroup;
  const std::string parent = own.dir.substr(0, own.dir.rfind('/'));
  for (const std::string& dir : {own.dir, own.dir + "/", parent, std::string("/"), own.dir + "/a/b",
                                 own.dir + "/..", own.dir + "/../x", parent + "/other"}) {
    CAPTURE(dir);
    why.clear();
    CHECK(child_cgroup::open_existing(dir, &why) == nullptr);
    CHECK(!why.empty());
  }
  why.clear();
  CHECK(child_cgroup::open_existing(own.dir + "/no-such-child-" + std::to_string(getpid()), &why) == nullptr);
  CHECK(why.find("no cgroup") != std::string::npos);
}

TEST_CASE("a monitor watches a limit set on an ancestor, and reports the fullest limit") {
  fake_v1_cgroup outer(900, 1000);
  std::string inner = outer.cgroup().dir + "/inner";
  REQUIRE(mkdir(inner.c_str(), 0755) == 0);
  {
    std::ofstream(inner + "/memory.usage_in_bytes") << 100 << "\n";
    std::ofstream(inner + "/memory.limit_in_bytes") << "9223372036854771712\n";  // v1's "unlimited"
  }
  std::string root = outer.cgroup().dir.substr(0, outer.cgroup().dir.rfind('/'));
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, inner, root});
  CHECK(m.source() == dropalloc::pressure_source::cgroup_v1);
  CHECK(m.description().find("ancestor") != std::string::npos);
  dropalloc::pressure_reading r;
  REQUIRE(m.read(&r));
  CHECK(r.usage == 900);
  CHECK(r.limit == 1000);
  // A limit on the inner cgroup too: the fuller of the two is reported.
  { std::ofstream(inner + "/memory.limit_in_bytes") << 110 << "\n"; }
  dropalloc::pressure_monitor m2(dropalloc::os::memory_cgroup{1, inner, root});
  REQUIRE(m2.read(&r));
  CHECK(r.usage == 100);
  CHECK(r.limit == 110);
  unlink((inner + "/memory.usage_in_bytes").c_str());
  unlink((inner + "/memory.limit_in_bytes").c_str());
  rmdir(inner.c_str());
}

TEST_CASE("PSI: stalls since the last read shed; the 10 s average alone sheds at most once per 10 s") {
  dropalloc::os::psi_some p;
  CHECK(dropalloc::os::parse_psi_some("some avg10=1.50 avg60=0.00 avg300=0.00 total=987654\n", &p));
  CHECK(p.avg10 == doctest::Approx(1.5));
  CHECK(p.total_us == 987654);
  dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{});
  dropalloc::pressure_thresholds t;
  dropalloc::pressure_reading r;
  r.source = dropalloc::pressure_source::psi;
  r.psi_some_avg10 = 50;  // stays high for seconds after the stall is over
  r.psi_stall_percent = 0;
  CHECK(m.assess(r, t).fraction == 0);
  r.psi_stall_percent = 30;
  CHECK(m.assess(r, t).fraction == doctest::Approx(t.psi_fraction));
  r.psi_stall_percent = -1;  // unknown: the average, rate-limited
  CHECK(m.assess(r, t).fraction > 0);
  for (int i = 0; i < 100; ++i) CHECK(m.assess(r, t).fraction == 0);
}

TEST_CASE("look-ahead: growth since the last poll sheds before the watermark is crossed") {
  constexpr std::uint64_t kLimit = 100 << 20;
  dropalloc::cache<int> c;
  for (int k = 0; k < 200; ++k) c.get(k, [] { return std::string(4096, 'v'); });
  fake_v1_cgroup cg(kLimit / 100 * 80, kLimit);
  dropalloc::headroom_options o;
  o.poll = 1ms;
  dropalloc::headroom_keeper k(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), o);
  std::this_thread::sleep_for(30ms);
  cg.set_usage(kLimit / 100 * 86);
  std::this_thread::sleep_for(30ms);
  CHECK(k.sheds() == 0);  // 86% + 6% growth: 92%, below the 95% watermark
  cg.set_usage(kLimit / 100 * 91);  // below 95%, but 5% growth makes 96% a poll ahead
  wait_until([&] { return k.sheds() > 0; });
  CHECK(k.sheds() > 0);
}
