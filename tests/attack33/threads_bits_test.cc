// Threads sealing interleaved blocks of the same arenas into one heap's queue
// (so that one thread's blocks become bits of another thread's entries),
// re-sealing and rewriting them, while another thread gives the queue
// (decay(false)) and seal_all()s. TSan/ASan clean, no hang; truth: every
// block sealed and unchanged checks intact and holds its bytes. Coverage:
// at the end, after seal_all(), every page of such a block was advised after
// its last seal began: reported only (MESSAGE), not CHECKed, since the busy
// path can lose an advice (busy_fork_bug_test) and the test would be flaky.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

struct blk {
  void* p = nullptr;
  std::size_t size = 0;
  std::uint64_t gen = 0;
  std::uint64_t since = 0;
  std::size_t seed = 0;
  bool sealed = false;
};

std::size_t run_threads() {
  os::fake_os fake;
  fake.reported_backing = dropalloc::backing::droppable;
  dropalloc::testing::recording_os rec(fake);
  core::heap h(dropalloc::testing::with_os_no_decay(&rec));

  constexpr int kThreads = 3;
  const std::size_t sizes[] = {64, 48, 1000, 4096};
  std::vector<blk> all;
  for (std::size_t sz : sizes) {
    for (int i = 0; i < 384; ++i) {
      core::alloc_error err{};
      blk b;
      b.p = h.allocate(sz, 16, &err);
      REQUIRE(b.p != nullptr);
      b.size = h.usable_size(b.p);
      b.seed = all.size() * 7 + 1;
      fill(b.p, b.size, b.seed);
      all.push_back(b);
    }
  }
  // Sealed before the threads start: the flusher's seal_all() seals live
  // blocks, which must not be written meanwhile (its contract); the threads
  // rewrite only blocks the heap sees sealed.
  for (blk& b : all) {
    b.since = rec.mark();
    REQUIRE(h.seal(b.p, &b.gen) == block_state::intact);
    b.sealed = true;
  }
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      dropalloc::testing::rng r{dropalloc::testing::derived_seed(3333, t)};
      for (int round = 0; round < 60; ++round) {
        const bool down = r.chance(30);
        for (std::size_t k = 0; k < all.size(); ++k) {
          const std::size_t i = down ? all.size() - 1 - k : k;
          if (static_cast<int>(i % kThreads) != t) continue;  // interleaved: i, i+3, ... are this thread's
          blk& b = all[i];
          if (r.chance(10)) {  // rewrite, then seal
            b.sealed = false;
            b.seed = r.next() % 100000;
            fill(b.p, b.size, b.seed);
          }
          b.since = rec.mark();
          std::uint64_t g = 0;
          const block_state s = h.seal(b.p, &g);
          if (s != block_state::intact) bad.fetch_add(1);
          b.gen = g;
          b.sealed = true;
          if (r.chance(5) && h.check(b.p, b.gen) != block_state::intact) bad.fetch_add(1);
        }
      }
    });
  }
  std::thread flusher([&] {
    int n = 0;
    while (!stop.load()) {
      if (++n % 8 == 0) {
        (void)h.seal_all();
      } else {
        (void)h.decay(false);
      }
      std::this_thread::yield();
    }
  });
  for (auto& t : ts) t.join();
  stop = true;
  flusher.join();
  CHECK(bad.load() == 0);
  CHECK(h.seal_all() == 0);
  std::size_t uncovered = 0;
  std::unordered_map<std::uintptr_t, std::uint64_t> last;  // page -> highest seq that advised it
  {
    std::lock_guard<std::mutex> g(rec.lock);
    for (const auto& e : rec.events) {
      for (std::uintptr_t a = e.from; a < e.to; a += 4096) {
        auto& v = last[a / 4096];
        if (e.seq > v) v = e.seq;
      }
    }
  }
  for (const blk& b : all) {
    CHECK(h.check(b.p, b.gen) == block_state::intact);
    CHECK(holds(b.p, b.size, b.seed));
    const auto a = reinterpret_cast<std::uintptr_t>(b.p);
    for (std::uintptr_t pg = a / 4096; pg <= (a + b.size - 1) / 4096; ++pg) {
      auto it = last.find(pg);
      if (it == last.end() || it->second < b.since) ++uncovered;
    }
  }
  MESSAGE("blocks " << all.size() << ", advice calls " << rec.mark() - 1 << ", sealed pages never advised after "
                    << "their last seal: " << uncovered);
  for (const blk& b : all) h.deallocate(b.p);
  return uncovered;
}

}  // namespace

TEST_CASE("threads sealing interleaved blocks into one queue: truth held, sanitizers clean") {
  (void)run_threads();
}
