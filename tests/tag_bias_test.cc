// Biased frees (allocator/core/tag_bias.h): a thread frees its own blocks with
// plain stores while no other thread writes their state bytes. Raced here
// against every writer that may meet such a free: generation() marking the
// block observed, a free of the same block on another thread, threads that
// share a tag, and fork.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/core/tag_bias.h"
#include "allocator/core/thread_cache.h"
#include "allocator/dropalloc.h"
#include "tests/pattern.h"
#include "tests/slow_alloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::testing::fill;
namespace core = dropalloc::core;

namespace {

bool barrier_available() { return core::grace_internal::g_asymmetric.load(); }

// The calling thread's tag bias, once it has a thread cache (null: none, or shared).
core::tag_bias* my_bias() { return core::t_current.bias; }

// Re-bias at every allocation slow path while a test runs, so that races
// meet biased frees all the time instead of once every 100 ms.
struct rebias_at_once {
  rebias_at_once() { core::set_rebias_after_ms_for_testing(0); }
  ~rebias_at_once() { core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs); }
};

// A few hundred nanoseconds at most, different every round: two racing
// calls started together meet at every phase over many rounds.
void spin(std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) asm volatile("" ::: "memory");
}
std::uint32_t next_delay(std::uint32_t& seed, std::uint32_t most = 400) {
  seed = seed * 1664525u + 1013904223u;
  return (seed >> 16) % most;
}

// 64 KiB at alignment 32 (tests/slow_alloc.h): its allocations always take
// the slow path (where the owner re-biases), its frees the fast path (where
// it frees biased).
constexpr std::size_t kBig = dropalloc::testing::kSlowAllocBytes;
constexpr std::size_t kBigAlign = dropalloc::testing::kSlowAllocAlign;
// The alignment a block of `size` is allocated and freed with in these tests.
constexpr std::size_t align_for(std::size_t size) { return size == kBig ? kBigAlign : 8; }

}  // namespace

TEST_CASE("a thread's tag is biased after its first allocations, revoked by another thread's write, biased again later") {
  if (!barrier_available()) {
    MESSAGE("skipped: no process barrier (membarrier) here, or a TSan build: frees are never biased");
    return;
  }
  droppable_resource res;
  std::vector<void*> mine;
  for (int i = 0; i < 4; ++i) mine.push_back(res.allocate(kBig, kBigAlign));
  core::tag_bias* b = my_bias();
  REQUIRE(b != nullptr);
  CHECK(b->mode.load() == core::bias::kBiased);
  res.deallocate(mine.back(), kBig, kBigAlign);  // biased: a plain store
  mine.pop_back();
  CHECK(b->mode.load() == core::bias::kBiased);
  // Another thread frees one of ours: it must revoke first.
  std::thread([&] { res.deallocate(mine.back(), kBig, kBigAlign); }).join();
  mine.pop_back();
  CHECK(b->mode.load() == core::bias::kRevoked);
  // Another thread asks for a generation: the tag is revoked already, nothing to do.
  std::uint64_t gen = 0;
  std::thread([&] { gen = res.generation(mine.back()); }).join();
  CHECK(gen != 0);
  CHECK(b->mode.load() == core::bias::kRevoked);
  // Biased again once it stayed revoked long enough, at an allocation slow path.
  std::this_thread::sleep_for(std::chrono::milliseconds(core::bias::kRebiasAfterMs + 20));
  mine.push_back(res.allocate(kBig, kBigAlign));
  CHECK(b->mode.load() == core::bias::kBiased);
  for (void* p : mine) res.deallocate(p, kBig, kBigAlign);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}

TEST_CASE("generation() racing the owner's biased free: no observation is lost") {
  // Each round the owner frees an unobserved block while an observer asks
  // its generation(), the two started together and then delayed by a random
  // few nanoseconds each, so that over the rounds the observer's mark lands
  // everywhere in the free. Then (the observer done) the owner allocates the
  // same address again and seals it. A generation the observer got was of
  // the freed life, so its handle must not read intact on the new one: a
  // plain store that wiped the mark would leave the generation unmoved.
  rebias_at_once fast_rebias;
  droppable_resource res;
  constexpr int kRounds = 6000;
  std::atomic<void*> target{nullptr};
  std::atomic<int> go{0}, answered{0};
  std::atomic<std::uint64_t> got{0};
  std::thread observer([&] {
    std::uint32_t seed = 7;
    for (int r = 1; r <= kRounds; ++r) {
      while (go.load(std::memory_order_acquire) < r) {
      }
      spin(next_delay(seed));
      got.store(res.generation(target.load()), std::memory_order_relaxed);
      answered.store(r, std::memory_order_release);
    }
  });
  std::uint32_t seed = 11;
  int lost = 0, observed = 0, reused = 0;
  for (int r = 1; r <= kRounds; ++r) {
    void* p = res.allocate(kBig, kBigAlign);
    fill(p, 64, static_cast<std::size_t>(r));
    target.store(p);
    go.store(r, std::memory_order_release);
    // Longer than the observer's: its generation() (a revocation first, a
    // system call) comes before the free, or in the middle of it, in a good
    // share of rounds.
    // Every fourth round far longer, so that it often comes after all of it.
    spin(next_delay(seed, r % 4 == 0 ? 100000 : 8000));
    res.deallocate(p, kBig, kBigAlign);
    while (answered.load(std::memory_order_acquire) < r) {
    }
    const std::uint64_t g = got.load(std::memory_order_relaxed);
    void* q = res.allocate(kBig, kBigAlign);
    fill(q, 64, static_cast<std::size_t>(r) + 1000000);
    (void)res.seal(q);
    if (g != 0) {
      ++observed;
      reused += q == p;
      if (res.check(p, g) == block_state::intact) ++lost;
    }
    res.deallocate(q, kBig, kBigAlign);
  }
  observer.join();
  MESSAGE("rounds whose generation() came before the free: " << observed << " (address reused in " << reused
                                                              << ")");
  // How many rounds the observer came first varies with the machine's load
  // (its revocation is a system call): reported, not asserted.
  CHECK(lost == 0);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("the owner's biased free racing another thread's free of the same block: exactly one wins") {
  rebias_at_once fast_rebias;
  droppable_resource res;
  constexpr int kRounds = 6000;
  std::atomic<void*> target{nullptr};
  std::atomic<int> go{0}, finished{0};
  std::thread other([&] {
    std::uint32_t seed = 5;
    for (int r = 1; r <= kRounds; ++r) {
      while (go.load(std::memory_order_acquire) < r) {
      }
      spin(next_delay(seed));
      res.deallocate(target.load(), kBig, kBigAlign);
      finished.store(r, std::memory_order_release);
    }
  });
  std::uint32_t seed = 3;
  std::set<void*> live;
  for (int r = 1; r <= kRounds; ++r) {
    void* p = res.allocate(kBig, kBigAlign);
    REQUIRE(live.insert(p).second);  // never handed out twice
    target.store(p);
    go.store(r, std::memory_order_release);
    spin(next_delay(seed));
    res.deallocate(p, kBig, kBigAlign);  // races the other thread's free of p
    while (finished.load(std::memory_order_acquire) < r) {
    }
    live.erase(p);
    // Hold a few blocks for a while: a block freed twice would come back twice.
    std::vector<void*> held;
    for (int k = 0; k < 3; ++k) {
      held.push_back(res.allocate(kBig, kBigAlign));
      REQUIRE(live.insert(held.back()).second);
    }
    for (void* h : held) {
      res.deallocate(h, kBig, kBigAlign);
      live.erase(h);
    }
  }
  other.join();
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == static_cast<std::uint64_t>(kRounds));
}

TEST_CASE("more threads than tags: shared tags are never biased, and their blocks stay whole") {
  rebias_at_once fast_rebias;
  droppable_resource res;
  constexpr int kThreads = 40;  // more than the 31 tags
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<unsigned> tags(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      void* first = res.allocate(kBig, kBigAlign);  // takes a tag (and biases it, if alone)
      tags[static_cast<std::size_t>(t)] = core::t_current.live_state >> core::state::kTagShift;
      ++ready;
      while (!go.load()) std::this_thread::yield();
      std::vector<std::pair<void*, std::size_t>> blocks;
      for (int i = 0; i < 2000; ++i) {
        const std::size_t size = i % 2 == 0 ? 48 : kBig;
        void* p = res.allocate(size, align_for(size));
        fill(p, 48, static_cast<std::size_t>(t * 7 + i));
        blocks.emplace_back(p, size);
        if (blocks.size() > 64) {
          res.deallocate(blocks.front().first, blocks.front().second, align_for(blocks.front().second));
          blocks.erase(blocks.begin());
        }
      }
      for (auto [p, size] : blocks) res.deallocate(p, size, align_for(size));
      res.deallocate(first, kBig, kBigAlign);
    });
  }
  while (ready.load() < kThreads) std::this_thread::yield();
  // Every thread holds its tag now: a tag two of them hold is shared.
  int shared = 0;
  for (unsigned tag = 1; tag <= core::state::kTags; ++tag) {
    if (std::count(tags.begin(), tags.end(), tag) < 2) continue;
    ++shared;
    CAPTURE(tag);
    CHECK(core::g_tag_bias[tag].mode.load() == core::bias::kShared);
  }
  CHECK(shared >= kThreads - static_cast<int>(core::state::kTags));
  go.store(true);
  for (auto& t : threads) t.join();
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().misuse_refused == 0);
}

TEST_CASE("fork while biased: the child frees and allocates, and its blocks are whole") {
  droppable_resource res;
  std::vector<void*> mine;
  for (int i = 0; i < 8; ++i) mine.push_back(res.allocate(kBig, kBigAlign));
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int bad = 0;
    for (void* p : mine) res.deallocate(p, kBig, kBigAlign);
    for (int i = 0; i < 1000; ++i) {
      void* p = res.allocate(64, 8);
      fill(p, 64, static_cast<std::size_t>(i));
      res.deallocate(p, 64, 8);
    }
    if (res.stats().blocks_live != 0 || res.stats().misuse_refused != 0) bad = 1;
    _exit(bad);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (void* p : mine) res.deallocate(p, kBig, kBigAlign);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("fork in the middle of a revocation: the child settles it instead of waiting for it") {
  // As if, at the fork, another thread was revoking this thread's bias and
  // this thread's free was in flight: neither exists in the child, so the
  // child must not wait for them. The fields are set by hand, restored after.
  if (!barrier_available()) {
    // No bias to revoke. (Also TSan's case, which does not let a child of a
    // process with threads start one.)
    MESSAGE("skipped: no process barrier (membarrier) here, or a TSan build: frees are never biased");
    return;
  }
  droppable_resource res;
  void* p = res.allocate(kBig, kBigAlign);
  core::tag_bias* b = my_bias();
  REQUIRE(b != nullptr);
  const std::uint8_t mode = b->mode.load();
  std::fflush(nullptr);
  b->in_free.store(1);
  b->mode.store(core::bias::kRevoking);
  pid_t pid = fork();
  if (pid == 0) {
    // Another thread asks for the generation of our block: it must revoke,
    // and must not wait for the revocation or the free frozen by the fork.
    std::uint64_t gen = 0;
    std::thread([&] { gen = res.generation(p); }).join();
    _exit(gen != 0 && b->mode.load() == core::bias::kRevoked && b->in_free.load() == 0 ? 0 : 1);
  }
  b->in_free.store(0);
  b->mode.store(mode);
  REQUIRE(pid > 0);
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 2000 && done == 0; ++i) {  // 20 s at most: a hang is a failure, not a stuck test
    done = waitpid(pid, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL("the child hung on a revocation begun before the fork");
  }
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  res.deallocate(p, kBig, kBigAlign);
}
