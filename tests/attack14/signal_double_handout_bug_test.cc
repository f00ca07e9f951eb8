// A signal handler frees two blocks while the same thread is inside its own
// cached free of a nearly full bin. The interrupted free read the bin's count
// (n = capacity - 1) before the handler ran; the handler's first free fills
// the bin, its second finds it full and hands the top half to the transfer
// cache (count = capacity / 2 + 1); the interrupted free then stores
// count = n + 1 = capacity, so the half just handed to the transfer cache is
// in the bin again. Those blocks are then handed out twice, and the arena
// bitmaps go wrong: frees of them are refused as double frees and a later
// refill spins in take_blocks (a hang). Hang detection: a watchdog thread
// fails the test after 120 s.
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "tests/signal_storm.h"

using dropalloc::core::alloc_error;
using dropalloc::core::heap;

namespace {

heap* g_h = nullptr;
std::vector<void*> g_stash;
std::atomic<int> g_next{0};

void on_signal(int) {
  for (int k = 0; k < 2; ++k) {
    int i = g_next.fetch_add(1, std::memory_order_relaxed);
    if (i < static_cast<int>(g_stash.size())) g_h->deallocate(g_stash[i]);
  }
}

}  // namespace

TEST_CASE("a signal handler's frees nested in the thread's own free: no block handed out twice") {
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 1200 && !finished.load(); ++i) usleep(100 * 1000);
    if (!finished.load()) {
      fprintf(stderr, "hang: still running after 120 s (see take_blocks)\n");
      _exit(1);
    }
  });
  heap h;
  g_h = &h;
  alloc_error err;
  constexpr int kCount = 40000;
  for (int i = 0; i < kCount; ++i) g_stash.push_back(h.allocate(32, 8, &err));
  REQUIRE(dropalloc::testing::install_signal_handler(SIGUSR1, on_signal));
  // The 32-byte bin (capacity 128) one short of full.
  std::vector<void*> fill;
  for (int i = 0; i < 127; ++i) fill.push_back(h.allocate(32, 8, &err));
  void* p = h.allocate(32, 8, &err);
  for (void* q : fill) h.deallocate(q);
  const pthread_t self = pthread_self();
  std::atomic<bool> stop{false};
  std::thread killer([&] {
    while (!stop.load()) {
      pthread_kill(self, SIGUSR1);
      for (int d = 0; d < 200; ++d) asm volatile("" ::: "memory");
    }
  });
  while (g_next.load() < kCount) {
    h.deallocate(p);  // n = capacity - 1 when read
    p = h.allocate(32, 8, &err);
  }
  stop.store(true);
  killer.join();
  signal(SIGUSR1, SIG_DFL);
  std::vector<void*> got;
  for (int i = 0; i < kCount + 2000; ++i) got.push_back(h.allocate(32, 8, &err));
  got.push_back(p);
  std::sort(got.begin(), got.end());
  long duplicates = 0;
  for (std::size_t i = 1; i < got.size(); ++i) duplicates += got[i] == got[i - 1];
  CHECK(duplicates == 0);
  CHECK(h.stats().misuse_refused == 0);
  finished.store(true);
  watchdog.join();
}
