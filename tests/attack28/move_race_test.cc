// Attack round 28: many threads finding the window full at once.
// One full window costs one move, and after kWindowMoves (4) moves the window
// is off: five windows are used in all. Was a finding: threads whose spots
// were claimed in the old window, and found taken after the move, counted
// against the new window, and every thread past the 16th miss moved the
// window again (with 200 threads, 12 of 20 runs of this test turned it off
// after 2-4 windows). A move also never returns to a window found full.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "allocator/os/os.h"

namespace {
constexpr std::size_t kArena = std::size_t{4} << 20;
constexpr std::uintptr_t kWindow = std::uintptr_t{64} << 30;
constexpr std::uintptr_t kFrom = std::uintptr_t{2} << 40, kTo = std::uintptr_t{18} << 40;

bool in_range(std::uintptr_t a) { return a >= kFrom && a < kTo; }

// Reserves every free part of [lo, hi) (PROT_NONE, no memory), halving
// where something is mapped already.
void fill(std::uintptr_t lo, std::uintptr_t hi) {
  if (hi <= lo) return;
  void* p = mmap(reinterpret_cast<void*>(lo), hi - lo, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (p != MAP_FAILED || hi - lo <= 4096) return;
  const std::uintptr_t mid = (lo + (hi - lo) / 2) & ~std::uintptr_t{4095};
  fill(lo, mid);
  fill(mid, hi);
}
}  // namespace

TEST_CASE("one full window costs one move, also with many threads missing at once") {
  const int threads = std::getenv("A28_THREADS") != nullptr ? std::atoi(std::getenv("A28_THREADS")) : 200;
  auto& os = dropalloc::os::ordinary_os();
  int err = 0;
  void* first = os.map_arena(kArena, kArena, &err);
  REQUIRE(first != nullptr);
  const auto a = reinterpret_cast<std::uintptr_t>(first);
  REQUIRE(in_range(a));
  std::set<std::uintptr_t> windows{a & ~(kWindow - 1)};
  fill(a & ~(kWindow - 1), (a & ~(kWindow - 1)) + kWindow);
  for (int round = 0; round < 10; ++round) {
    std::mutex lock;
    std::set<std::uintptr_t> found;
    std::atomic<int> ready{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&] {
        ready.fetch_add(1);
        while (ready.load() < threads) std::this_thread::yield();
        int e = 0;
        void* p = os.map_arena(kArena, kArena, &e);  // left mapped: its window is filled next
        const auto q = reinterpret_cast<std::uintptr_t>(p);
        if (p != nullptr && in_range(q)) {
          std::lock_guard<std::mutex> g(lock);
          found.insert(q & ~(kWindow - 1));
        }
      });
    }
    for (auto& t : ts) t.join();
    for (int i = 0; i < 40 && found.empty(); ++i) {  // one thread alone: is the window still on?
      void* p = os.map_arena(kArena, kArena, &err);
      const auto q = reinterpret_cast<std::uintptr_t>(p);
      if (p != nullptr && in_range(q)) found.insert(q & ~(kWindow - 1));
    }
    if (found.empty()) break;
    // One move per full window: never two new windows in one round, never an old one.
    CHECK(found.size() == 1);
    for (auto w : found) {
      CHECK(windows.count(w) == 0);
      windows.insert(w);
      fill(w, w + kWindow);
    }
  }
  std::printf("windows used before the window turned off: %zu (the first and 4 moves: 5)\n", windows.size());
  CHECK(windows.size() == 5);
}
