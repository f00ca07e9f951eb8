// Shedding by a headroom_keeper racing everything else a cache does: readers
// (get, get_or_build on bytes and objects), erase, clear, set_cost,
// set_byte_budget (also 0), forced drops of the pages readers just checked,
// trim() from other threads, two keepers on one cache, keepers made and
// destroyed while readers run. A fake cgroup (fake_cgroup.h) pins usage at the
// limit, so the keepers shed every poll. Every value served is checked
// against what its builder produces for that key (the shadow model: values
// are a pure function of the key and a per-key generation that only erase
// bumps). Also: a monitor on a missing or vanishing cgroup, and the
// cache's new members at their edges.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/fake_cgroup.h"

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kOps = 1500;
#else
constexpr int kOps = 8000;
#endif
constexpr int kKeys = 300;

std::string value_for(int key) {
  std::size_t n = static_cast<std::size_t>(8 + (key * 2654435761u) % (key % 5 == 0 ? 20000 : 700));
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('A' + (key + i * 7) % 50);
  return s;
}

using row_t = std::pmr::vector<std::pmr::string>;
row_t row_for(int key, std::pmr::memory_resource* mr) {
  row_t r(mr);
  for (int i = 0; i < 2 + key % 17; ++i) r.emplace_back(value_for(key * 31 + i).substr(0, 20 + i));
  return r;
}
bool row_ok(const row_t& r, int key) {
  if (r.size() != static_cast<std::size_t>(2 + key % 17)) return false;
  for (int i = 0; i < 2 + key % 17; ++i)
    if (std::string_view(r[static_cast<std::size_t>(i)]) != value_for(key * 31 + i).substr(0, 20 + i)) return false;
  return true;
}

dropalloc::headroom_options fast(bool cap) {
  dropalloc::headroom_options o;
  o.poll = std::chrono::milliseconds(1);
  o.cap = cap;
  return o;
}

}  // namespace

TEST_CASE("keepers shedding every poll, racing readers, erase, clear, budgets, drops and trim: nothing served wrong") {
  dropalloc_test::fake_cgroup cg(1000, 1000);  // always above the high watermark
  for (int nthreads : {2, 4, 8}) {
    CAPTURE(nthreads);
    std::atomic<std::uintptr_t> recent[64] = {};
    std::atomic<unsigned> next{0};
    dropalloc::cache_options opts;
    opts.value.on_step = [&](dropalloc::value_step s, std::byte* block, std::size_t n, std::size_t) {
      if (s != dropalloc::value_step::compared) return;
      unsigned i = next.fetch_add(1, std::memory_order_relaxed);
      recent[i % 64].store(reinterpret_cast<std::uintptr_t>(block + (i * 4096) % n), std::memory_order_relaxed);
    };
    dropalloc::cache<int> c(opts);
    dropalloc::cache<int, row_t> rows(opts);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> wrong{0}, served{0}, gave_up{0};
    {
      // Two keepers on each cache; one caps, one does not.
      dropalloc::headroom_keeper k1(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), fast(true));
      dropalloc::headroom_keeper k2(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c), fast(false));
      dropalloc::headroom_keeper k3(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(rows), fast(true));
      CHECK(k1.description().find("cgroup v1") != std::string::npos);
      std::thread chaos([&] {
        std::mt19937 rng(static_cast<unsigned>(nthreads));
        while (!stop.load(std::memory_order_relaxed)) {
          unsigned pick = rng() % 100;
          std::uintptr_t a = recent[rng() % 64].load(std::memory_order_relaxed);
          if (pick < 60) {
            if (a != 0) c.resource().drop_for_testing(reinterpret_cast<void*>(a), 1);
            if (a != 0) rows.resource().drop_for_testing(reinterpret_cast<void*>(a), 1);
          } else if (pick < 70) {
            c.resource().trim();
            rows.resource().trim();
          } else if (pick < 75) {
            c.set_byte_budget(rng() % 3 == 0 ? 0 : rng() % 200000);
          } else if (pick < 78) {
            c.clear();
          } else if (pick < 80) {
            c.resource().drop_all_for_testing();
          } else if (pick < 90) {
            c.shed_at_least(rng() % 50000);
            rows.shed(rng() % 50000);
          } else {
            // A keeper made and destroyed while everything runs.
            dropalloc::headroom_keeper k(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(c),
                                         fast(rng() % 2 == 0));
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
      });
      std::vector<std::thread> readers;
      for (int t = 0; t < nthreads; ++t) {
        readers.emplace_back([&, t] {
          std::mt19937 rng(static_cast<unsigned>(t * 7919 + nthreads));
          for (int i = 0; i < kOps; ++i) {
            int k = static_cast<int>(rng() % kKeys);
            unsigned op = rng() % 100;
            try {
              bool ok = true;
              if (op < 40) {
                ok = c.get_or_build(k, [k] { return value_for(k); },
                                    [k](std::string_view v) { return v == value_for(k); },
                                    static_cast<dropalloc::rebuild_cost>(rng() % 3));
              } else if (op < 65) {
                ok = c.get(k, [k] { return value_for(k); }) == value_for(k);
              } else if (op < 85) {
                ok = rows.get_or_build(
                    k, [k](std::pmr::memory_resource* mr) { return row_for(k, mr); },
                    [k](const row_t& r) { return row_ok(r, k); });
              } else if (op < 93) {
                c.erase(k);
                rows.erase(k);
                continue;
              } else {
                c.set_cost(k, static_cast<dropalloc::rebuild_cost>(rng() % 3));
                continue;
              }
              if (!ok) wrong.fetch_add(1);
              served.fetch_add(1, std::memory_order_relaxed);
            } catch (const dropalloc::regenerate_error&) {
              gave_up.fetch_add(1);
            }
          }
        });
      }
      for (auto& r : readers) r.join();
      stop = true;
      chaos.join();
      MESSAGE(nthreads << " threads: served " << served.load() << ", wrong " << wrong.load() << ", gave up "
                       << gave_up.load() << ", keeper sheds " << k1.sheds() + k2.sheds() << " ("
                       << k1.bytes_shed() + k2.bytes_shed() << " B), evictions " << c.stats().evictions);
      CHECK(k1.sheds() + k2.sheds() > 0);
    }
    CHECK(wrong.load() == 0);
    CHECK(served.load() > 0);
    // Nothing leaked, nothing counted twice: emptied, the caches hold nothing.
    c.clear();
    rows.clear();
    CHECK(c.bytes_live() == 0);
    CHECK(rows.bytes_live() == 0);
    CHECK(c.resource().stats().blocks_live == 0);
    CHECK(rows.resource().stats().blocks_live == 0);
  }
}

TEST_CASE("the keeper's own trim() from its thread, while readers of a shared resource run") {
  // Two caches on one resource: a shed of one trims the resource under the
  // other's readers.
  dropalloc_test::fake_cgroup cg(1000, 1000);
  dropalloc::droppable_resource res;
  dropalloc::cache_options opts;
  opts.resource = &res;
  dropalloc::cache<int> shed_me(opts), read_me(opts);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrong{0};
  {
    dropalloc::headroom_keeper k(dropalloc::pressure_monitor(cg.cgroup()), dropalloc::shed_coldest(shed_me), fast(false));
    std::thread filler([&] {
      int k2 = 0;
      while (!stop.load()) shed_me.get(k2++ % 500, [k2] { return value_for(k2 % 500); });
    });
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t)
      readers.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        for (int i = 0; i < kOps; ++i) {
          int key = static_cast<int>(rng() % kKeys);
          if (read_me.get(key, [key] { return value_for(key); }) != value_for(key)) wrong.fetch_add(1);
          if (i % 50 == 0) read_me.erase(key);
        }
      });
    for (auto& r : readers) r.join();
    stop = true;
    filler.join();
    CHECK(k.sheds() > 0);
  }
  CHECK(wrong.load() == 0);
}

TEST_CASE("a keeper on a missing cgroup, or one that vanishes, says so and stops at once") {
  using clock = std::chrono::steady_clock;
  {
    dropalloc::pressure_monitor m(dropalloc::os::memory_cgroup{1, "/nonexistent/attack12", {}});
    CHECK(m.source() != dropalloc::pressure_source::cgroup_v1);
    MESSAGE("missing cgroup: " << m.description());
    dropalloc::pressure_reading r;
    if (m.source() == dropalloc::pressure_source::none) CHECK_FALSE(m.read(&r));
  }
  {
    dropalloc::cache<int> c;
    c.get(1, [] { return std::string(5000, 'x'); });
    auto cg = std::make_unique<dropalloc_test::fake_cgroup>(10, 1000);  // far below the watermark
    auto t0 = clock::now();
    {
      dropalloc::headroom_keeper k(dropalloc::pressure_monitor(cg->cgroup()), dropalloc::shed_coldest(c), fast(true));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      cg->remove();  // unreadable from now on
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      CHECK(k.sheds() == 0);
    }
    CHECK(clock::now() - t0 < std::chrono::seconds(1));
    CHECK(c.get(1, [] { return std::string(); }) == std::string(5000, 'x'));  // not shed
    CHECK(c.byte_budget() == 0);
  }
  {
    // A limit of "max" (no limit) and a usage above it.
    dropalloc_test::fake_cgroup cg(5000, 0);
    dropalloc::pressure_monitor m(cg.cgroup());
    dropalloc::pressure_reading r;
    if (m.source() == dropalloc::pressure_source::cgroup_v1) {
      CHECK(m.read(&r));
      CHECK(m.assess(r, {}).bytes == 5000);
    }
  }
}

TEST_CASE("shed_at_least, bytes_live and set_byte_budget at their edges") {
  dropalloc::cache<int> c;
  CHECK(c.shed_at_least(0) == 0);
  CHECK(c.shed_at_least(UINT64_MAX) == 0);
  CHECK(c.bytes_live() == 0);
  for (int k = 0; k < 20; ++k) c.get(k, [k] { return value_for(k); });
  std::uint64_t live = c.bytes_live();
  CHECK(live > 0);
  CHECK(c.shed_at_least(UINT64_MAX) == live);
  CHECK(c.bytes_live() == 0);
  CHECK(c.stats().entries == 0);
  c.set_byte_budget(1);  // smaller than any value: only the newest stays
  for (int k = 0; k < 20; ++k) CHECK(c.get(k, [k] { return value_for(k); }) == value_for(k));
  CHECK(c.stats().entries == 1);
  c.set_byte_budget(0);  // no budget
  for (int k = 0; k < 20; ++k) CHECK(c.get(k, [k] { return value_for(k); }) == value_for(k));
  CHECK(c.stats().entries == 20);
  auto t = dropalloc::shed_coldest(c);
  dropalloc::shed_request r;
  r.fraction = 1.0;  // a stall signal asking for everything
  CHECK(t.shed(r) == live);
  CHECK(t.held() == 0);
  c.clear();
  CHECK(c.resource().stats().blocks_live == 0);
}
