// Another thread's writers of a block's state byte, each raced against the
// owner's biased free of that block at every phase (random spin delays on
// both sides, re-biasing at every allocation slow path): generation(),
// seal(block_ref&), write_and_seal(block_ref&), seal_many, seal_all, and a
// free by handle (deallocate(block_ref)), a racing double free. After each
// round the owner reuses the address; a handle the other thread got must not
// read intact there, no block is handed out twice, and the counters stay exact.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <span>
#include <thread>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/core/tag_bias.h"
#include "allocator/dropalloc.h"
#include "tests/pattern.h"
#include "tests/slow_alloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::testing::fill;
namespace core = dropalloc::core;

namespace {

// Allocated by the slow path (re-biases), freed biased.
constexpr std::size_t kBig = dropalloc::testing::kSlowAllocBytes;
constexpr std::size_t kBigAlign = dropalloc::testing::kSlowAllocAlign;

void spin(std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) asm volatile("" ::: "memory");
}
std::uint32_t next(std::uint32_t& seed, std::uint32_t most) {
  seed = seed * 1664525u + 1013904223u;
  return (seed >> 16) % most;
}

enum op { kGeneration, kSealRef, kWriteAndSeal, kSealMany, kFreeByHandle, kSealAll, kOps };

}  // namespace

TEST_CASE("every cross-thread writer against the owner's biased free") {
  core::set_rebias_after_ms_for_testing(0);
  droppable_resource res;
  constexpr int kRounds = 5000;
  std::atomic<void*> target{nullptr};
  std::atomic<int> go{0}, done{0};
  std::atomic<std::uint64_t> got{0};
  std::thread other([&] {
    std::uint32_t seed = 99;
    unsigned char src[256];
    fill(src, sizeof src, 77);
    for (int r = 1; r <= kRounds; ++r) {
      while (go.load(std::memory_order_acquire) < r) {
      }
      spin(next(seed, 3000));
      void* p = target.load();
      std::uint64_t g = 0;
      switch (r % kOps) {
        case kGeneration:
          g = res.generation(p);
          break;
        case kSealRef: {
          block_ref b{p, res.generation(p)};
          if (b.generation != 0 && res.seal(b) == block_state::intact) g = b.generation;
          break;
        }
        case kWriteAndSeal: {
          block_ref b{p, res.generation(p)};
          if (b.generation != 0 && res.write_and_seal(b, src, sizeof src) == block_state::intact) g = b.generation;
          break;
        }
        case kSealMany: {
          void* one[1] = {p};
          block_state ans[1];
          (void)res.seal_many(std::span<void* const>(one, 1), std::span<block_state>(ans, 1));
          break;
        }
        case kFreeByHandle:
          res.deallocate(block_ref{p, res.generation(p)});
          break;
        case kSealAll:
          (void)res.seal_all();
          break;
      }
      got.store(g, std::memory_order_relaxed);
      done.store(r, std::memory_order_release);
    }
  });
  std::uint32_t seed = 7;
  std::set<void*> live;
  int lost = 0, observed = 0;
  for (int r = 1; r <= kRounds; ++r) {
    void* p = res.allocate(kBig, kBigAlign);
    REQUIRE(live.insert(p).second);
    fill(p, 64, static_cast<std::size_t>(r));
    target.store(p);
    go.store(r, std::memory_order_release);
    spin(next(seed, r % 2 == 0 ? 400000 : 3000));
    res.deallocate(p, kBig, kBigAlign);
    while (done.load(std::memory_order_acquire) < r) {
    }
    live.erase(p);
    const std::uint64_t g = got.load(std::memory_order_relaxed);
    std::vector<void*> held;
    for (int k = 0; k < 3; ++k) {
      void* q = res.allocate(kBig, kBigAlign);
      REQUIRE(live.insert(q).second);  // a block freed twice would come back twice
      fill(q, 64, static_cast<std::size_t>(r) * 3 + k + 1000000);
      (void)res.seal(q);
      held.push_back(q);
    }
    if (g != 0) {
      ++observed;
      if (res.check(p, g) == block_state::intact) ++lost;
    }
    for (void* q : held) {
      res.deallocate(q, kBig, kBigAlign);
      live.erase(q);
    }
  }
  other.join();
  core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs);
  MESSAGE("handles taken by the other thread: " << observed << ", intact on a later life: " << lost);
  CHECK(lost == 0);
  CHECK(res.stats().blocks_live == 0);
  // Each free by handle raced the owner's free: exactly one of the two refused.
  CHECK(res.stats().misuse_refused == static_cast<std::uint64_t>((kRounds + kOps - 1 - kFreeByHandle) / kOps));
}
