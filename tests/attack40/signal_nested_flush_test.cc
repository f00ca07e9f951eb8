// A signal handler that frees large blocks (a 40 MiB one: retire::now; a
// batch-filling run of evictions) and trims, on a thread stalled in the middle
// of unmapping a batch it took: nested flushes (another slot), no double
// unmap, counters back to 0; the handler's trim of the heap whose batch the
// interrupted frame holds waits its ~100 ms and returns (measured).
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

#include "tests/attack40/common.h"

using namespace attack40;

namespace {

os::fake_os* g_real_a = nullptr;
stalling_os* g_os_a = nullptr;
core::heap* g_a = nullptr;
core::heap* g_c = nullptr;
std::atomic<bool> g_handled{false};
std::atomic<long> g_trim_ms{-1};
std::atomic<int> g_a_mapped_after_trim{-1};

long now_ms() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void handler(int) {
  void* big = dropalloc::testing::allocate_large(*g_c, 40u << 20);
  g_c->deallocate(big);
  free_growing(*g_c, 2 * kLarge, kCacheSlots + static_cast<int>(core::kRetiredBatchSegments));
  const long t0 = now_ms();
  g_a->trim();
  g_trim_ms.store(now_ms() - t0);
  g_a_mapped_after_trim.store(g_real_a->arena_maps.load() - g_real_a->arena_unmaps.load());
  g_handled.store(true);
  g_os_a->release.store(true);
}

}  // namespace

TEST_CASE("a handler frees and trims on a thread stalled mid-batch") {
  static os::fake_os real_a, real_c;
  static stalling_os os_a(real_a);
  g_real_a = &real_a;
  g_os_a = &os_a;
  g_a = new core::heap(dropalloc::testing::with_os_no_decay(&os_a));
  g_c = new core::heap(dropalloc::testing::with_os_no_decay(&real_c));
  core::unmap_deferred_segments();
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGUSR2, &sa, nullptr) == 0);
  std::atomic<pthread_t> tid{};
  std::thread t([&] {
    tid.store(pthread_self());
    const std::size_t next = free_growing(*g_a, kLarge, kCacheSlots);
    os_a.stall.store(true);
    free_growing(*g_a, next, static_cast<int>(core::kRetiredBatchSegments));
  });
  while (!os_a.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  pthread_kill(tid.load(), SIGUSR2);
  t.join();
  CHECK(g_handled.load());
  std::fprintf(stderr, "handler's trim of A: %ld ms, A's arenas mapped after it: %d (16 cached)\n",
               g_trim_ms.load(), g_a_mapped_after_trim.load());
  g_a->trim();
  g_c->trim();
  CHECK(g_a->retired_waiting().load() == 0);
  CHECK(g_c->retired_waiting().load() == 0);
  CHECK(real_a.arena_maps.load() == real_a.arena_unmaps.load());
  CHECK(real_c.arena_maps.load() == real_c.arena_unmaps.load());
  delete g_a;
  delete g_c;
  CHECK(real_a.arena_maps.load() == real_a.arena_unmaps.load());
  // Metadata: the segment map's leaves, mapped through a heap's OS layer,
  // stay (process-wide): one more map than unmaps is expected.
  CHECK(real_a.metadata_maps.load() - real_a.metadata_unmaps.load() <= 1);
  CHECK(real_c.metadata_maps.load() - real_c.metadata_unmaps.load() <= 1);
}
