// Regression (held): read sections on borrowed reader slots against grace
// periods that unmap. Short-lived threads make fewer than 32 read sections
// each (every one borrows a slot and gives it back), asking owns(),
// usable_size() and generation() about large blocks that another thread
// frees (and trim() unmaps) all the time; a signal sent to the process
// lands in those threads at any point of a borrow or a give-back, and its
// handler opens read sections of its own (owns, usable_size). A grace
// period that missed a reader on a just-borrowed slot would let it read an
// unmapped arena header (SIGSEGV). A watchdog aborts a hang.
//
// With ATTACK37_CHECK_SLOTS (slot_signal_claim_bug_test, finding 4), every
// slot must be back at the end; ATTACK37_READER_ROUNDS sets the sections per
// thread (3 each round: 10 rounds bring a thread near its 33rd section,
// where it claims its slot for life, inside or outside a handler).
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack37/common.h"

using dropalloc::droppable_resource;

namespace {

constexpr int kBlocks = 8;
constexpr std::size_t kLarge = std::size_t{1} << 20;
droppable_resource* g_res = nullptr;
std::atomic<void*> g_blocks[kBlocks];
std::atomic<long> g_handler_sections{0};
int g_rounds = 1;
bool g_block_at_exit = false;

// A handler that found the thread without a slot and left it with one has
// claimed the thread's slot for life; if the thread's own slot differs at
// its end, the interrupted code claimed another one over it.
thread_local dropalloc::core::reader_slot* t_claimed_in_handler = nullptr;
std::atomic<int> g_claimed_twice{0};

void on_signal(int) {
  const bool had_none = dropalloc::core::grace_internal::t_slot == nullptr;
  void* p = g_blocks[g_handler_sections.fetch_add(1, std::memory_order_relaxed) % kBlocks].load(
      std::memory_order_relaxed);
  (void)g_res->owns(p);
  (void)g_res->usable_size(p);
  if (had_none && dropalloc::core::grace_internal::t_slot != nullptr) {
    t_claimed_in_handler = dropalloc::core::grace_internal::t_slot;
  }
}

void* reader(void* arg) {
  unsigned seed = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(arg));
  for (int i = 0; i < g_rounds; ++i) {  // 3 sections each: 24, all borrowed
    seed = seed * 1103515245 + 12345;
    void* p = g_blocks[(seed >> 8) % kBlocks].load(std::memory_order_relaxed);
    (void)g_res->owns(p);
    (void)g_res->usable_size(p);
    (void)g_res->generation(p);
  }
  if (t_claimed_in_handler != nullptr && dropalloc::core::grace_internal::t_slot != t_claimed_in_handler) {
    g_claimed_twice.fetch_add(1);
  }
  if (g_block_at_exit) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
  }
  return nullptr;
}

std::uint32_t taken_slots() { return dropalloc::core::grace_internal::slots_taken(); }

}  // namespace

TEST_CASE("borrowed reader slots keep arenas mapped through grace periods, signals included") {
  alarm(120);
  if (const char* r = std::getenv("ATTACK37_READER_ROUNDS")) g_rounds = std::atoi(r);
  g_block_at_exit = std::getenv("ATTACK37_BLOCK_AT_EXIT") != nullptr;
  droppable_resource res;
  g_res = &res;
  for (auto& b : g_blocks) b.store(res.allocate(kLarge, 64));
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, nullptr);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  // Only the reader threads take the signal: they unblock it themselves.
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
  pthread_attr_t reader_attr;  // readers start with SIGUSR1 unblocked
  pthread_attr_init(&reader_attr);
  sigset_t none;
  sigemptyset(&none);
  pthread_attr_setsigmask_np(&reader_attr, &none);
  const std::uint32_t slots_before = taken_slots();

  std::atomic<bool> stop{false};
  std::thread writer([&] {
    unsigned n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      void* fresh = res.allocate(kLarge + (n % 4) * 4096, 64);
      void* old = g_blocks[n % kBlocks].exchange(fresh);
      res.deallocate(old, kLarge, 64);
      if (++n % 4 == 0) res.trim();  // the large cache's mappings go too
    }
  });
  std::thread bomber([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      kill(getpid(), SIGUSR1);
      sched_yield();
    }
  });
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  long threads = 0;
  while (std::chrono::steady_clock::now() < end) {
    pthread_t t[4];
    for (int j = 0; j < 4; ++j) {
      if (pthread_create(&t[j], &reader_attr, reader, reinterpret_cast<void*>(threads * 4 + j)) != 0) t[j] = 0;
    }
    for (auto x : t) {
      if (x != 0) {
        pthread_join(x, nullptr);
        ++threads;
      }
    }
  }
  stop.store(true);
  writer.join();
  bomber.join();
  // Signals still pending for the process go to a thread that unblocks.
  const std::uint32_t slots_after = taken_slots();
  std::printf("%ld reader threads, %ld sections in handlers; reader slots taken %u -> %u; threads whose "
              "handler claimed a slot for life that the interrupted section replaced: %d\n",
              threads, g_handler_sections.load(), slots_before, slots_after, g_claimed_twice.load());
  // Finding 4 (README.md): a handler's claim for life racing the
  // interrupted section's claim keeps a slot; checked only in the bug test.
  if (std::getenv("ATTACK37_CHECK_SLOTS") != nullptr) CHECK(slots_after == slots_before);
  pthread_attr_destroy(&reader_attr);
  for (auto& b : g_blocks) res.deallocate(b.load(), kLarge, 64);
  signal(SIGUSR1, SIG_IGN);
  alarm(0);
}
