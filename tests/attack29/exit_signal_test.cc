// Held: signals land on threads while they exit (their tables retired and
// kept) and while new threads adopt them; the handler asks generation() and
// check() about sealed blocks of the resource. Answers stay right, nothing
// crashes or hangs.
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack29/common.h"
#include "tests/signal_storm.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

droppable_resource* g_res = nullptr;
block_ref g_blocks[16];
std::atomic<int> g_wrong{0};
std::atomic<long> g_answers{0};

void on_signal(int) {
  const int saved = errno;
  for (const block_ref& b : g_blocks) {
    if (g_res->check(b) != block_state::intact) g_wrong.fetch_add(1, std::memory_order_relaxed);
    if (g_res->generation(b.ptr) != b.generation) g_wrong.fetch_add(1, std::memory_order_relaxed);
  }
  g_answers.fetch_add(1, std::memory_order_relaxed);
  errno = saved;
}

}  // namespace

TEST_CASE("signals that query blocks while threads exit and adopt tables") {
  droppable_resource res;
  g_res = &res;
  for (int i = 0; i < 16; ++i) {
    g_blocks[i] = res.allocate_block(64 + static_cast<std::size_t>(i) * 100, 8);
    std::memset(g_blocks[i].ptr, i + 1, 64 + static_cast<std::size_t>(i) * 100);
    REQUIRE(res.seal(g_blocks[i]) == block_state::intact);
  }
  REQUIRE(dropalloc::testing::install_signal_handler(SIGUSR1, on_signal));
  std::atomic<bool> stop{false};
  std::vector<pthread_t> handles;
  std::atomic<int> started{0};
  // Threads that allocate, free other sizes and exit at once, all signalled.
  std::thread spawner([&] {
    for (int n = 0; n < (attack29::kSlow ? 500 : 1500); ++n) {
      std::thread t([&res, n] {
        void* ps[24];
        for (int i = 0; i < 24; ++i) ps[i] = res.allocate(16 + static_cast<std::size_t>((n + i) % 40) * 16, 8);
        for (int i = 0; i < 24; ++i) res.deallocate(ps[i], 16 + static_cast<std::size_t>((n + i) % 40) * 16, 8);
      });
      const pthread_t h = t.native_handle();
      for (int k = 0; k < 3; ++k) pthread_kill(h, SIGUSR1);
      t.join();
      started.fetch_add(1);
    }
    stop = true;
  });
  spawner.join();
  signal(SIGUSR1, SIG_IGN);
  CHECK(g_wrong.load() == 0);
  CHECK(g_answers.load() > 0);
  CHECK(res.stats().blocks_live == 16);
  CHECK(res.stats().misuse_refused == 0);
  for (const block_ref& b : g_blocks) res.deallocate(b);
  g_res = nullptr;
}
