// Held: thousands of short threads, several alive at once, each using two
// resources: the mappings and resident memory stay bounded (spare tables at
// most 4, the rest unmapped), and everything goes back.
#include <doctest/doctest.h>

#include <cstdio>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack29/common.h"

using dropalloc::droppable_resource;

TEST_CASE("thousands of short threads: mappings and memory bounded") {
  droppable_resource a, b;
  auto work = [&](int id) {
    std::vector<void*> ps;
    for (int i = 0; i < 32; ++i) {
      ps.push_back(a.allocate(8 + static_cast<std::size_t>((id + i) * 24 % 4000), 8));
      ps.push_back(b.allocate(8 + static_cast<std::size_t>((id + i) * 40 % 9000), 8));
    }
    for (std::size_t i = 0; i < ps.size(); i += 2) {
      a.deallocate(ps[i], 8 + static_cast<std::size_t>((id + static_cast<int>(i / 2)) * 24 % 4000), 8);
      b.deallocate(ps[i + 1], 8 + static_cast<std::size_t>((id + static_cast<int>(i / 2)) * 40 % 9000), 8);
    }
  };
  // Warm up: the first few hundred threads reach the steady state.
  int id = 0;
  for (int wave = 0; wave < 50; ++wave) {
    std::vector<std::thread> ts;
    for (int t = 0; t < 6; ++t) ts.emplace_back(work, id++);
    for (auto& t : ts) t.join();
  }
  const std::size_t maps0 = attack29::map_count();
  const std::size_t rss0 = attack29::rss_kib();
  for (int wave = 0; wave < (attack29::kSlow ? 150 : 500); ++wave) {
    std::vector<std::thread> ts;
    for (int t = 0; t < 6; ++t) ts.emplace_back(work, id++);
    for (auto& t : ts) t.join();
  }
  const std::size_t maps1 = attack29::map_count();
  const std::size_t rss1 = attack29::rss_kib();
  std::printf("%d threads: maps %zu -> %zu, rss %zu -> %zu KiB\n", id, maps0, maps1, rss0, rss1);
  // Arenas of the classes used come and go (a few dozen mappings); a table
  // or cache leaked per thread would add thousands, or 4 KiB each at least.
  CHECK(maps1 <= maps0 + 200);
  CHECK(rss1 <= rss0 + 8192);
  CHECK(a.stats().blocks_live == 0);
  CHECK(b.stats().blocks_live == 0);
  CHECK(a.stats().misuse_refused + b.stats().misuse_refused == 0);
}
