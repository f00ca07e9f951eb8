// Held: a thread allocates blocks and exits; the next threads inherit its
// table (and likely its tag number, re-biased at once: rebias after 0 ms),
// and two of them free every block at once (double frees racing a biased
// free by the tag's new owner). Exactly one free of each wins, the other is
// refused and counted; nothing is handed out twice afterwards.
#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <set>
#include <thread>
#include <vector>

#include "allocator/core/tag_bias.h"
#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;

TEST_CASE("double frees by threads that adopted the allocating thread's table") {
  dropalloc::core::set_rebias_after_ms_for_testing(0);
  droppable_resource res;
  std::uint64_t expected_misuse = 0;
  for (int round = 0; round < 30; ++round) {
    CAPTURE(round);
    constexpr int kBlocks = 300;
    std::vector<void*> blocks(kBlocks);
    const std::size_t size = round % 2 == 0 ? 16 : 48;
    // Allocated on a thread that exits at once: its table becomes a spare.
    std::thread([&] {
      for (auto& p : blocks) p = res.allocate(size, 8);
    }).join();
    std::barrier go(2);
    auto freer = [&](bool forward) {
      // A first allocation takes a (spare) table and a tag, then re-biases.
      res.deallocate(res.allocate(size, 8), size, 8);
      res.deallocate(res.allocate(size, 8), size, 8);
      go.arrive_and_wait();
      if (forward) {
        for (int i = 0; i < kBlocks; ++i) res.deallocate(blocks[static_cast<std::size_t>(i)], size, 8);
      } else {
        for (int i = kBlocks - 1; i >= 0; --i) res.deallocate(blocks[static_cast<std::size_t>(i)], size, 8);
      }
    };
    std::thread a(freer, true), b(freer, false);
    a.join();
    b.join();
    expected_misuse += kBlocks;
    CHECK(res.stats().misuse_refused == expected_misuse);
    CHECK(res.stats().blocks_live == 0);
    // Nothing in two bins: 2 * kBlocks allocations at once are distinct.
    std::vector<void*> again[2];
    std::thread c([&] { for (int i = 0; i < kBlocks; ++i) again[0].push_back(res.allocate(size, 8)); });
    std::thread d([&] { for (int i = 0; i < kBlocks; ++i) again[1].push_back(res.allocate(size, 8)); });
    c.join();
    d.join();
    std::set<void*> seen;
    for (auto& v : again) {
      for (void* p : v) CHECK(seen.insert(p).second);
    }
    CHECK(res.stats().blocks_live == 2 * kBlocks);
    for (auto& v : again) {
      for (void* p : v) res.deallocate(p, size, 8);
    }
    CHECK(res.stats().blocks_live == 0);
    CHECK(res.stats().misuse_refused == expected_misuse);
  }
  dropalloc::core::set_rebias_after_ms_for_testing(dropalloc::core::bias::kRebiasAfterMs);
}
