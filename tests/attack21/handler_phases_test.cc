// A signal handler on the owner thread lands anywhere in the owner's free of
// a 64-byte block (biased tag, re-biased at every allocation slow path), and
// acts once on the very block being freed: free it again, generation(),
// seal(block_ref&), write_and_seal(block_ref&), seal_many(block_ref), or
// generation() then a free by handle. Where it landed is recorded (in_free
// set or not).
//
// Must hold: of the two frees exactly one wins (misuse_refused counts the
// other, blocks_live is exact), the block is never handed out twice (two
// allocations after each free differ), and a handle the handler got never
// reads intact on the block's next life.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "allocator/core/grace.h"
#include "allocator/core/tag_bias.h"
#include "allocator/core/thread_cache.h"
#include "allocator/dropalloc.h"
#include "tests/pattern.h"
#include "tests/signal_storm.h"
#include "tests/slow_alloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::testing::fill;
using dropalloc::testing::install_signal_handler;
using dropalloc::testing::slow_alloc_and_free;
using dropalloc::testing::signal_storm;
namespace core = dropalloc::core;

namespace {

constexpr std::size_t kSize = 64;

enum mode : int { kFreeAgain, kGeneration, kSealRef, kWriteAndSeal, kSealMany, kFreeByHandle, kModes };
const char* const kNames[kModes] = {"free again", "generation", "seal(block_ref&)", "write_and_seal",
                                    "seal_many", "free by handle"};

droppable_resource* g_res = nullptr;
int g_mode = 0;
std::atomic<void*> g_target{nullptr};
std::atomic<std::uint64_t> g_handle{0};   // generation the handler got (0: none)
std::atomic<std::uint64_t> g_acted[2];    // by in_free at entry
std::atomic<std::uint64_t> g_frees{0};    // frees the handler made
thread_local bool t_owner = false;

void on_signal(int) {
  if (!t_owner || g_res == nullptr) return;
  core::tag_bias* b = core::t_current.bias;
  const int in_free = b != nullptr && b->in_free.load(std::memory_order_relaxed) != 0 ? 1 : 0;
  void* p = g_target.exchange(nullptr, std::memory_order_relaxed);
  if (p == nullptr) return;
  g_acted[in_free].fetch_add(1, std::memory_order_relaxed);
  std::uint64_t g = 0;
  switch (g_mode) {
    case kFreeAgain:
      g_res->deallocate(p, kSize, 8);
      g_frees.fetch_add(1, std::memory_order_relaxed);
      return;
    case kGeneration:
      g = g_res->generation(p);
      break;
    case kSealRef: {
      block_ref r{p, g_res->generation(p)};
      if (r.generation != 0 && g_res->seal(r) == block_state::intact) g = r.generation;
      break;
    }
    case kWriteAndSeal: {
      unsigned char src[kSize];
      std::memset(src, 0x5a, sizeof src);
      block_ref r{p, g_res->generation(p)};
      if (r.generation != 0 && g_res->write_and_seal(r, src, kSize) == block_state::intact) g = r.generation;
      break;
    }
    case kSealMany: {
      block_ref r[1] = {block_ref{p, g_res->generation(p)}};
      block_state a[1] = {block_state::stale};
      if (r[0].generation != 0) {
        (void)g_res->seal_many(std::span<block_ref>(r, 1), std::span<block_state>(a, 1));
        if (a[0] == block_state::intact) g = r[0].generation;
      }
      break;
    }
    case kFreeByHandle: {
      block_ref r{p, g_res->generation(p)};
      if (r.generation != 0) {
        g_res->deallocate(r);
        g_frees.fetch_add(1, std::memory_order_relaxed);
      }
      return;
    }
  }
  g_handle.store(g, std::memory_order_relaxed);
}

struct outcome {
  std::uint64_t in_window = 0, outside = 0, handles = 0, lost = 0, twice = 0, frees = 0;
};

outcome run(int m, std::chrono::milliseconds budget) {
  core::set_rebias_after_ms_for_testing(0);
  droppable_resource res;
  g_mode = m;
  g_acted[0].store(0);
  g_acted[1].store(0);
  g_frees.store(0);
  g_handle.store(0);
  g_res = &res;
  REQUIRE(install_signal_handler(SIGUSR1, on_signal));

  outcome out;
  signal_storm(SIGUSR1, [&](auto ready) {
    for (int i = 0; i < 100; ++i) slow_alloc_and_free(res);
    t_owner = true;
    ready();
    const auto until = std::chrono::steady_clock::now() + budget;
    std::uint64_t round = 0;
    while (std::chrono::steady_clock::now() < until && out.lost == 0 && out.twice == 0) {
      for (int k = 0; k < 1000; ++k) {
        ++round;
        if (round % 64 == 0) slow_alloc_and_free(res);  // re-bias
        void* p = res.allocate(kSize, 8);
        fill(p, kSize, round);
        g_target.store(p, std::memory_order_relaxed);
        res.deallocate(p, kSize, 8);
        if (g_target.exchange(nullptr, std::memory_order_relaxed) != nullptr) continue;  // handler did not act
        const std::uint64_t g = g_handle.exchange(0, std::memory_order_relaxed);
        // No block handed out twice: two allocations must differ.
        void* q1 = res.allocate(kSize, 8);
        void* q2 = res.allocate(kSize, 8);
        if (q1 == q2) ++out.twice;
        fill(q1, kSize, round + 1000000);
        fill(q2, kSize, round + 2000000);
        (void)res.seal(q1);
        (void)res.seal(q2);
        if (g != 0) {
          ++out.handles;
          if (res.check(p, g) == block_state::intact) ++out.lost;
        }
        res.deallocate(q2, kSize, 8);
        if (q1 != q2) res.deallocate(q1, kSize, 8);
      }
    }
    t_owner = false;
  });
  g_res = nullptr;
  core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs);
  out.in_window = g_acted[1].load();
  out.outside = g_acted[0].load();
  out.frees = g_frees.load();
  const auto st = res.stats();
  MESSAGE(std::string(kNames[m]) << ": handler acted inside the biased window " << out.in_window << " times, elsewhere in the free "
                    << out.outside << "; handles " << out.handles << ", intact on the next life " << out.lost
                    << "; handler frees " << out.frees << ", refused " << st.misuse_refused
                    << "; handed out twice " << out.twice << "; live " << st.blocks_live);
  CHECK(out.lost == 0);
  CHECK(out.twice == 0);
  if (out.twice == 0) CHECK(st.blocks_live == 0);
  CHECK(st.misuse_refused == out.frees);
  return out;
}

}  // namespace

TEST_CASE("a handler acting on the block its thread is freeing, at every point of the free") {
  if (!core::grace_internal::g_asymmetric.load()) {
    MESSAGE("skipped: no process barrier, frees are never biased");
    return;
  }
  for (int m = 0; m < kModes; ++m) {
    const std::string name = kNames[m];
    CAPTURE(name);
    (void)run(m, std::chrono::milliseconds(2500));
  }
}
