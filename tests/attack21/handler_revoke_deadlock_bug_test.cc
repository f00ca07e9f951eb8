// Two threads, both with biased tags, each interrupted by a signal handler
// inside its own biased free (in_free set). Each handler calls generation()
// on a live, never-observed block of the other thread.
//
// generation() writes the state byte (the observed mark), so
// before_state_write() (allocator/core/tag_bias.h) revokes the other
// thread's bias first: revoke_bias() (allocator/core/tag_bias.cc) sets the
// other tag `revoking`, runs the process barrier, then waits until the other
// thread's in_free reads 0. The other thread cannot clear it: it is inside
// its own handler, itself waiting in revoke_bias() for this thread's in_free.
// Neither handler returns: both threads spin forever.
//
// c00b48f makes generation()/seal() from a handler that interrupted the
// owner's free answer as for a free block when they name the block being
// freed; any other block still revokes, and the wait for in_free assumes the
// owner's free always runs on.
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

droppable_resource* g_res = nullptr;
std::atomic<bool> g_armed{false};
void* g_victim[2] = {nullptr, nullptr};           // each thread's live, never-observed block
std::atomic<int> g_in_window[2];                  // handler of thread i is inside a biased free
std::atomic<int> g_calling[2];                    // handler of thread i is inside generation()
std::atomic<std::uint64_t> g_pairs{0};            // both handlers met inside their frees
std::atomic<std::uint64_t> g_started{0};          // generation() calls made
std::atomic<std::uint64_t> g_returned{0};         // generation() calls that returned
thread_local int t_index = -1;

void on_signal(int) {
  const int me = t_index;
  if (me < 0 || !g_armed.load(std::memory_order_relaxed)) return;
  core::tag_bias* b = core::t_current.bias;
  if (b == nullptr || b->in_free.load(std::memory_order_relaxed) == 0) return;
  // Inside this thread's biased free. Wait (a bounded number of spins, no
  // clock) for the other thread's handler to be inside its own.
  g_in_window[me].store(1, std::memory_order_seq_cst);
  bool met = false;
  for (long i = 0; i < 20000000; ++i) {
    if (g_in_window[1 - me].load(std::memory_order_seq_cst) != 0) {
      met = true;
      break;
    }
  }
  if (met) {
    if (me == 0) g_pairs.fetch_add(1, std::memory_order_relaxed);
    g_calling[me].store(1, std::memory_order_seq_cst);
    g_started.fetch_add(1, std::memory_order_seq_cst);
    (void)g_res->generation(g_victim[1 - me]);
    g_calling[me].store(0, std::memory_order_seq_cst);
    g_returned.fetch_add(1, std::memory_order_relaxed);
    g_armed.store(false, std::memory_order_relaxed);  // one meeting is enough
  }
  g_in_window[me].store(0, std::memory_order_seq_cst);
}

}  // namespace

TEST_CASE("generation() from handlers inside two threads' biased frees, each on the other's block: no deadlock") {
  if (!core::grace_internal::g_asymmetric.load()) {
    MESSAGE("skipped: no process barrier, frees are never biased");
    return;
  }
  core::set_rebias_after_ms_for_testing(0);
  droppable_resource res;
  g_res = &res;
  REQUIRE(install_signal_handler(SIGUSR1, on_signal));

  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  pthread_t tids[2]{};
  std::atomic<bool> biased[2]{};
  auto body = [&](int me) {
    t_index = me;
    tids[me] = pthread_self();
    // Tag biased (re-biased at each allocation slow path while the delay is 0).
    core::tag_bias* b = nullptr;
    for (int i = 0; i < 100000; ++i) {
      slow_alloc_and_free(res);
      b = core::t_current.bias;
      if (b != nullptr && b->mode.load() == core::bias::kBiased) break;
    }
    biased[me].store(b != nullptr && b->mode.load() == core::bias::kBiased);
    g_victim[me] = res.allocate(kSize, 8);  // live, never observed, never freed here
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    while (!stop.load(std::memory_order_relaxed)) {
      for (int k = 0; k < 1000; ++k) res.deallocate(res.allocate(kSize, 8), kSize, 8);
    }
  };
  std::thread t0(body, 0), t1(body, 1);
  while (ready.load() < 2) std::this_thread::yield();
  REQUIRE(biased[0].load());
  REQUIRE(biased[1].load());
  g_armed.store(true);

  // Signals to both threads until their handlers meet inside both frees.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (g_pairs.load() == 0 && std::chrono::steady_clock::now() < until) {
    pthread_kill(tids[0], SIGUSR1);
    pthread_kill(tids[1], SIGUSR1);
    for (int i = 0; i < 200; ++i) asm volatile("" ::: "memory");
  }
  const std::uint64_t pairs = g_pairs.load();
  MESSAGE("handlers met inside both threads' biased frees: " << pairs << " times");
  if (pairs == 0) {
    // Not reached in the time given: nothing shown either way.
    stop.store(true);
    t0.join();
    t1.join();
    g_res = nullptr;
    core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs);
    WARN_MESSAGE(false, "window not reached");
    return;
  }
  // One or both handlers are inside generation() (a handler whose partner
  // returned before it looked gives up waiting). Each call made must return.
  for (int i = 0; i < 500 && (g_returned.load() < g_started.load() || g_calling[0] || g_calling[1]); ++i) {
    usleep(10000);
  }
  const std::uint64_t started = g_started.load();
  const std::uint64_t returned = g_returned.load();
  if (returned < started) {
    std::fprintf(stderr,
                 "DEADLOCK: %llu of %llu generation() calls returned after 5 s; both threads' handlers are inside "
                 "generation() (calling: %d %d), each revoking the other's tag and waiting for its in_free\n",
                 static_cast<unsigned long long>(returned), static_cast<unsigned long long>(started),
                 g_calling[0].load(), g_calling[1].load());
    for (unsigned t = 1; t <= core::state::kTags; ++t) {
      const unsigned mode = core::g_tag_bias[t].mode.load();
      const unsigned in_free = core::g_tag_bias[t].in_free.load();
      if (mode != core::bias::kRevoked || in_free != 0) {
        std::fprintf(stderr, "  tag %u: mode %u (1 = revoking), in_free %u\n", t, mode, in_free);
      }
    }
    CHECK(returned == started);
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(1);  // the two threads never return: cannot join them
  }
  stop.store(true);
  t0.join();
  t1.join();
  g_res = nullptr;
  core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs);
  CHECK(started >= 1);
  CHECK(returned == started);
}
