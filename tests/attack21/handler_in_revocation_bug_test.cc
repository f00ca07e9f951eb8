// A thread's generation() revokes another thread's bias (the block is that
// thread's live, never-observed block: before_state_write, allocator/core/
// tag_bias.h). revoke_bias() (allocator/core/tag_bias.cc) sets the tag
// `revoking`, runs the process barrier (a system call), waits for the
// owner's in_free, then stores `revoked`. A signal handler that interrupts
// it there and calls generation() on another never-observed block of the
// same owner revokes the same tag: it finds `revoking` and waits for "the
// other thread" revoking it to finish. That revoker is the interrupted code
// of its own thread, which cannot run until the handler returns: the thread
// spins forever.
//
// No free is in flight anywhere and the handler does not allocate or free:
// only generation(), which nothing documents as unsafe in a handler (and
// which c00b48f answers from a handler inside the thread's own free).
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/core/tag_bias.h"
#include "allocator/core/thread_cache.h"
#include "allocator/dropalloc.h"
#include "tests/signal_storm.h"
#include "tests/slow_alloc.h"

using dropalloc::droppable_resource;
using dropalloc::testing::install_signal_handler;
using dropalloc::testing::slow_alloc_and_free;
namespace core = dropalloc::core;

namespace {

constexpr std::size_t kSize = 64;
constexpr int kBatch = 64;

droppable_resource* g_res = nullptr;
std::atomic<core::tag_bias*> g_owner_bias{nullptr};
std::atomic<void*> g_spare{nullptr};   // an owner's block for the handler, never observed
std::atomic<int> g_entered{0};         // handler found the owner's tag revoking
std::atomic<int> g_returned{0};        // and its generation() returned
thread_local bool t_observer = false;

void on_signal(int) {
  if (!t_observer || g_entered.load(std::memory_order_relaxed) != 0) return;
  core::tag_bias* b = g_owner_bias.load(std::memory_order_relaxed);
  if (b == nullptr || b->mode.load(std::memory_order_relaxed) != core::bias::kRevoking) return;
  void* p = g_spare.load(std::memory_order_relaxed);
  if (p == nullptr) return;
  // Only this thread revokes the owner's tag in this test: the interrupted
  // code is inside revoke_bias().
  g_entered.store(1, std::memory_order_seq_cst);
  (void)g_res->generation(p);
  g_returned.store(1, std::memory_order_seq_cst);
}

}  // namespace

TEST_CASE("generation() from a handler that interrupted a revocation of the same tag: no self-deadlock") {
  if (!core::grace_internal::g_asymmetric.load()) {
    MESSAGE("skipped: no process barrier, frees are never biased");
    return;
  }
  core::set_rebias_after_ms_for_testing(0);
  droppable_resource res;
  g_res = &res;
  REQUIRE(install_signal_handler(SIGUSR1, on_signal));

  // The owner publishes batches of fresh blocks (live, never observed) and
  // re-biases its tag between batches (allocation slow path, delay 0).
  std::atomic<bool> stop{false};
  std::atomic<void**> batch{nullptr};
  std::atomic<int> batches{0};
  std::atomic<bool> observer_done{false};
  std::thread owner([&] {
    g_owner_bias.store(nullptr);
    std::vector<void*> keep;
    while (!stop.load()) {
      void** arr = new void*[kBatch + 1];
      for (int i = 0; i <= kBatch; ++i) arr[i] = res.allocate(kSize, 8);
      for (int i = 0; i < 100; ++i) {
        slow_alloc_and_free(res);
        if (core::t_current.bias != nullptr && core::t_current.bias->mode.load() == core::bias::kBiased) break;
      }
      g_owner_bias.store(core::t_current.bias);
      g_spare.store(arr[kBatch]);
      batch.store(arr);
      // The observer may still be reading arr after stop is set: wait until it
      // has handed the batch back or has left its loop.
      while (batch.load() != nullptr && !observer_done.load()) std::this_thread::yield();
      g_spare.store(nullptr);
      for (int i = 0; i <= kBatch; ++i) keep.push_back(arr[i]);
      delete[] arr;
      batches.fetch_add(1);
    }
    for (void* p : keep) res.deallocate(p, kSize, 8);
  });

  pthread_t observer_tid{};
  std::atomic<bool> observer_ready{false};
  std::thread observer([&] {
    t_observer = true;
    observer_tid = pthread_self();
    observer_ready.store(true);
    while (!stop.load()) {
      void** arr = batch.load();
      if (arr == nullptr) continue;
      for (int i = 0; i < kBatch; ++i) (void)res.generation(arr[i]);  // the first revokes the owner's bias
      batch.store(nullptr);
    }
    observer_done.store(true);
  });
  while (!observer_ready.load()) std::this_thread::yield();

  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while (g_entered.load() == 0 && std::chrono::steady_clock::now() < until) {
    pthread_kill(observer_tid, SIGUSR1);
    for (int i = 0; i < 200; ++i) asm volatile("" ::: "memory");
  }
  MESSAGE("owner batches: " << batches.load() << ", handler inside a revocation: " << g_entered.load());
  if (g_entered.load() != 0) {
    // The handler's generation() must return (a hang check, not a timing one).
    for (int i = 0; i < 500 && g_returned.load() == 0; ++i) usleep(10000);
    if (g_returned.load() == 0) {
      core::tag_bias* b = g_owner_bias.load();
      std::fprintf(stderr,
                   "DEADLOCK: the handler's generation() has not returned after 5 s; owner tag mode %u (1 = "
                   "revoking), in_free %u: the handler waits for the revocation its own thread was inside\n",
                   static_cast<unsigned>(b->mode.load()), static_cast<unsigned>(b->in_free.load()));
      CHECK(g_returned.load() == 1);
      std::fflush(stderr);
      std::fflush(stdout);
      std::_Exit(1);  // the observer never returns: cannot join it
    }
  } else {
    WARN_MESSAGE(false, "window not reached");
  }
  stop.store(true);
  observer.join();
  owner.join();
  g_res = nullptr;
  core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs);
}
