// A signal handler on the owner thread asks generation() (or seals) the very
// block that the interrupted code is freeing with a biased (plain) store.
//
// generation() and seal() write the state byte of a live, never-observed
// block. before_state_write() (allocator/core/tag_bias.h) skips the
// revocation when the block's state byte is the caller's own live state:
// the owner's own writes are assumed to be ordered with its own free by
// program order. A signal handler breaks that assumption: it runs on the
// owner thread *between* free_biased()'s mode check and its plain store.
// The handler's compare-and-exchange marks the block observed (and returns a
// generation), then the interrupted free resumes and stores kFree over the
// mark. The free never moves the generation, so the handle the handler got
// reads `intact` on the block's next life at that address.
//
// Before biased frees the interrupted free was a compare-and-exchange from
// the unobserved live state: it failed on the mark and took the slow path,
// which moves the generation. generation(), seal() and check() take no lock
// and never allocate; nothing documents them as unsafe in a handler (only
// allocating and freeing are: allocator/shim/README.md).
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "allocator/core/grace.h"
#include "allocator/core/tag_bias.h"
#include "allocator/core/thread_cache.h"
#include "allocator/dropalloc.h"
#include "tests/pattern.h"
#include "tests/signal_storm.h"
#include "tests/slow_alloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::testing::fill;
using dropalloc::testing::install_signal_handler;
using dropalloc::testing::slow_alloc_and_free;
using dropalloc::testing::signal_storm;
namespace core = dropalloc::core;

namespace {

constexpr std::size_t kSize = 64;

droppable_resource* g_res = nullptr;
std::atomic<void*> g_target{nullptr};
// What the handler saw inside one free: the block and the generation it got.
std::atomic<void*> g_seen_ptr{nullptr};
std::atomic<std::uint64_t> g_seen_gen{0};
std::atomic<int> g_mode{0};  // 0: generation(), 1: seal(block_ref&)
std::atomic<std::uint64_t> g_in_window{0};

void on_signal(int) {
  core::tag_bias* b = core::t_current.bias;
  if (b == nullptr || g_res == nullptr) return;
  // Only when the interrupted code is inside free_biased (steps 1-4).
  if (b->in_free.load(std::memory_order_relaxed) == 0) return;
  void* p = g_target.load(std::memory_order_relaxed);
  if (p == nullptr || g_seen_ptr.load(std::memory_order_relaxed) != nullptr) return;
  g_in_window.fetch_add(1, std::memory_order_relaxed);
  std::uint64_t g = 0;
  if (g_mode.load(std::memory_order_relaxed) == 0) {
    g = g_res->generation(p);
  } else {
    dropalloc::block_ref ref{p, 0};
    ref.generation = g_res->generation(p);
    if (ref.generation != 0 && g_res->seal(ref) == block_state::intact) g = ref.generation;
  }
  if (g != 0) {
    g_seen_gen.store(g, std::memory_order_relaxed);
    g_seen_ptr.store(p, std::memory_order_release);
  }
}

struct outcome {
  int observed = 0;  // frees the handler observed the block in
  int lost = 0;      // of those, the old handle read intact on the next life
  std::uint64_t windows = 0;
};

outcome run(int mode, std::chrono::milliseconds budget) {
  core::set_rebias_after_ms_for_testing(0);
  droppable_resource res;
  g_res = &res;
  g_mode.store(mode);
  g_seen_ptr.store(nullptr);
  g_in_window.store(0);
  REQUIRE(install_signal_handler(SIGUSR1, on_signal));

  outcome out;
  signal_storm(SIGUSR1, [&](auto ready) {
    // Warm up: a thread cache, a tag, the tag biased.
    for (int i = 0; i < 100; ++i) slow_alloc_and_free(res);
    ready();
    const auto until = std::chrono::steady_clock::now() + budget;
    std::size_t round = 0;
    while (std::chrono::steady_clock::now() < until && out.lost == 0) {
      for (int k = 0; k < 1000; ++k) {
        ++round;
        void* p = res.allocate(kSize, 8);
        fill(p, kSize, round);
        g_target.store(p, std::memory_order_relaxed);
        res.deallocate(p, kSize, 8);  // biased: the handler may land inside it
        g_target.store(nullptr, std::memory_order_relaxed);
        void* seen = g_seen_ptr.load(std::memory_order_acquire);
        if (seen == nullptr) continue;
        const std::uint64_t g = g_seen_gen.load(std::memory_order_relaxed);
        ++out.observed;
        // The next life at that address (the bin is LIFO): new contents, sealed.
        void* q = res.allocate(kSize, 8);
        fill(q, kSize, round + 1000000);
        (void)res.seal(q);
        if (q == seen && res.check(seen, g) == block_state::intact) ++out.lost;
        res.deallocate(q, kSize, 8);
        g_seen_ptr.store(nullptr, std::memory_order_release);
        if (out.lost != 0) break;
      }
    }
  });
  g_res = nullptr;
  out.windows = g_in_window.load();
  core::set_rebias_after_ms_for_testing(core::bias::kRebiasAfterMs);
  CHECK(res.stats().blocks_live == 0);
  return out;
}

}  // namespace

TEST_CASE("generation() from a signal handler inside the owner's biased free: the observation must not be lost") {
  if (!core::grace_internal::g_asymmetric.load()) {
    MESSAGE("skipped: no process barrier, frees are never biased");
    return;
  }
  outcome o = run(0, std::chrono::milliseconds(8000));
  MESSAGE("handler inside a biased free: " << o.windows << " times, observed the block " << o.observed
                                            << " times, old handle intact on the next life " << o.lost
                                            << " times");
  CHECK(o.lost == 0);
}

TEST_CASE("seal() from a signal handler inside the owner's biased free: the seal must not be lost") {
  if (!core::grace_internal::g_asymmetric.load()) {
    MESSAGE("skipped: no process barrier, frees are never biased");
    return;
  }
  outcome o = run(1, std::chrono::milliseconds(8000));
  MESSAGE("handler inside a biased free: " << o.windows << " times, sealed the block " << o.observed
                                            << " times, old handle intact on the next life " << o.lost
                                            << " times");
  CHECK(o.lost == 0);
}
