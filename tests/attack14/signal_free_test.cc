// Frees from a signal handler that interrupts the same thread's read sections
// (check, owns, generation, usable_size) or its free fast path, while another
// thread trims: in the handler the fast section is not entered when the
// interrupted code is inside a section (its slot's epoch is set), so the free
// takes the slow path nested in the interrupted section. Each handler frees
// one live block (allocated by this thread) and double-frees it: the live
// ones must all be freed once, the doubles refused and counted, nothing may
// hang or crash. Also: a free inside a visit_heaps callback.
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "tests/signal_storm.h"

using dropalloc::core::alloc_error;
using dropalloc::core::heap;

namespace {

#ifndef INTERRUPT_CACHE_OPS
#define INTERRUPT_CACHE_OPS 0
#endif
constexpr bool kInterruptCacheOps = INTERRUPT_CACHE_OPS;

heap* g_heap = nullptr;
void* g_stash[4096];
std::atomic<int> g_next{0};
std::atomic<int> g_taken{0};
int g_count = 0;

void on_signal(int) {
  int i = g_next.fetch_add(1, std::memory_order_relaxed);
  if (i >= g_count) return;
  g_heap->deallocate(g_stash[i]);
  g_heap->deallocate(g_stash[i]);  // double free: refused
  g_taken.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

TEST_CASE("frees in a signal handler nested in read sections and fast frees") {
  heap h;
  g_heap = &h;
  alloc_error err;
  REQUIRE(dropalloc::testing::install_signal_handler(SIGUSR1, on_signal));
  const pthread_t self = pthread_self();
  std::uint64_t base_refused = h.stats().misuse_refused;
  for (int round = 0; round < 20; ++round) {
    g_count = 2000;
    for (int i = 0; i < g_count; ++i) {
      g_stash[i] = h.allocate(16 + 16 * (i % 20), 8, &err);
      REQUIRE(g_stash[i] != nullptr);
    }
    std::vector<void*> mine;
    for (int i = 0; i < 64; ++i) mine.push_back(h.allocate(32, 8, &err));
    std::uint64_t gen = 0;
    (void)h.seal(mine[0], &gen);
    g_next.store(0);
    g_taken.store(0);
    std::atomic<bool> stop{false};
    std::thread killer([&] {
      while (!stop.load()) {
        pthread_kill(self, SIGUSR1);
        std::this_thread::yield();
      }
    });
    std::thread trimmer([&] {
      while (!stop.load()) h.trim();
    });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (g_next.load() < g_count && std::chrono::steady_clock::now() < deadline) {
      for (int k = 0; k < 100; ++k) {
        (void)h.check(mine[0], gen);
        (void)h.owns(mine[k % 64]);
        (void)h.usable_size(mine[(k + 1) % 64]);
        if (kInterruptCacheOps) {
          // this thread's own fast frees and allocations, interrupted too
          void* q = h.allocate(48, 8, &err);
          h.deallocate(q);
        }
      }
    }
    stop.store(true);
    killer.join();
    trimmer.join();
    REQUIRE(g_next.load() >= g_count);  // hang detection only: generous
    REQUIRE(g_taken.load() == g_count);
    REQUIRE(h.stats().misuse_refused == base_refused + static_cast<std::uint64_t>(g_count) * (round + 1));
    for (void* p : mine) h.deallocate(p);
    h.trim();
    REQUIRE(h.stats().blocks_live == 0);
  }
  signal(SIGUSR1, SIG_DFL);
}

namespace {
struct visit_ctx {
  heap* h;
  void* p;
  bool done = false;
};
}  // namespace

TEST_CASE("a free inside a visit_heaps callback") {
  heap h;
  alloc_error err;
  void* p = h.allocate(64, 8, &err);
  void* q = h.allocate(64, 8, &err);
  visit_ctx ctx{&h, p};
  heap::visit_heaps(
      [](const heap& each, const dropalloc::resource_stats&, const dropalloc::core::class_usage*, void* c) {
        auto* v = static_cast<visit_ctx*>(c);
        if (&each != v->h || v->done) return;
        v->h->deallocate(v->p);
        v->h->deallocate(v->p);  // refused
        v->done = true;
      },
      &ctx, false);
  REQUIRE(ctx.done);
  REQUIRE(h.stats().misuse_refused == 1);
  REQUIRE(h.usable_size(q) == 64);
  h.deallocate(q);
  REQUIRE(h.stats().blocks_live == 0);
}
