// Regression: values of the cache layer read and rebuilt by several threads
// while another thread drops the whole resource at random moments, and while
// each access's on_step hook drops pages at chosen steps of storing and
// reading. A visitor always sees exactly the value that was built (or the
// access throws regenerate_error after max_builds); never a wrong or torn
// value, never a crash, no hang.
//
// Contract: regenerable.h, "An access hands the visitor a private copy of the
// value, known to be exactly what was stored, or a freshly rebuilt one".
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory_resource>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr auto kRun = std::chrono::milliseconds(1200);
#else
constexpr auto kRun = std::chrono::milliseconds(2000);
#endif

using value_t = std::pmr::map<std::pmr::string, std::pmr::vector<std::int64_t>>;

value_t build(std::pmr::memory_resource* mr, int key) {
  value_t m(mr);
  for (int i = 0; i < 20 + key % 40; ++i) {
    auto& v = m[std::pmr::string(std::string(static_cast<std::size_t>(1 + (key + i) % 37), char('a' + i % 26)), mr)];
    for (int k = 0; k < (key * 7 + i) % 300; ++k) v.push_back(key * 1000003LL + i * 1009 + k);
  }
  return m;
}

bool same(const value_t& a, const value_t& b) {
  if (a.size() != b.size()) return false;
  auto i = a.begin();
  auto j = b.begin();
  for (; i != a.end(); ++i, ++j) {
    if (i->first != j->first || i->second.size() != j->second.size()) return false;
    for (std::size_t k = 0; k < i->second.size(); ++k) {
      if (i->second[k] != j->second[k]) return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("cache values under concurrent whole-resource drops: visitors see exactly the built value") {
  dropalloc::droppable_resource res;
  dropalloc::cache_options opts;
  opts.resource = &res;
  opts.value.max_builds = 64;
  dropalloc::cache<int, value_t> c(opts);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrong{0}, visits{0}, gave_up{0};
  std::thread dropper([&] {
    while (!stop.load()) {
      res.drop_all_for_testing();
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      std::pmr::monotonic_buffer_resource mono;
      auto deadline = std::chrono::steady_clock::now() + kRun;
      int i = t;
      while (std::chrono::steady_clock::now() < deadline) {
        int key = i++ % 8;
        {  // `expect` lives on mono: gone before mono is released
          value_t expect = build(&mono, key);
          try {
            bool ok = c.get_or_build(
                key, [key](std::pmr::memory_resource* mr) { return build(mr, key); },
                [&](const value_t& v) { return same(v, expect); });
            if (!ok) wrong.fetch_add(1);
            visits.fetch_add(1);
          } catch (const dropalloc::regenerate_error&) {
            gave_up.fetch_add(1);
          }
        }
        mono.release();
      }
    });
  }
  for (auto& r : readers) r.join();
  stop.store(true);
  dropper.join();
  MESSAGE(visits.load() << " visits, " << gave_up.load() << " gave up, " << c.stats().drops_detected
                        << " drops detected");
  CHECK(wrong.load() == 0);
  CHECK(visits.load() > 0);
}

TEST_CASE("a drop at every single step of storing and reading: the visitor sees the value or nothing") {
  dropalloc::droppable_resource res;
  // Count the steps of one store and one read first.
  int total = 0;
  {
    dropalloc::regenerable_options o;
    o.on_step = [&](dropalloc::value_step, std::byte*, std::size_t, std::size_t) { ++total; };
    dropalloc::regenerable<value_t> r(res, [](std::pmr::memory_resource* mr) { return build(mr, 29); }, o);
    r.visit([](const value_t&) { return 0; });
  }
  REQUIRE(total > 4);
  std::pmr::monotonic_buffer_resource mono;
  const value_t expect = build(&mono, 29);
  for (int at = 0; at < total; ++at) {
    for (int whole = 0; whole < 2; ++whole) {
      int calls = 0;
      dropalloc::regenerable_options o;
      o.on_step = [&](dropalloc::value_step, std::byte* block, std::size_t size, std::size_t offset) {
        if (calls++ != at) return;
        if (whole != 0) {
          res.drop_all_for_testing();
        } else {
          // The page just written or read.
          std::size_t page = offset == 0 ? 0 : (offset - 1) / 4096;
          (void)res.drop_for_testing(block + page * 4096, 1);
        }
        (void)size;
      };
      dropalloc::regenerable<value_t> r(res, [](std::pmr::memory_resource* mr) { return build(mr, 29); }, o);
      bool ok = r.visit([&](const value_t& v) { return same(v, expect); });
      CHECK(ok);
      bool ok2 = r.visit([&](const value_t& v) { return same(v, expect); });
      CHECK(ok2);
    }
  }
}
