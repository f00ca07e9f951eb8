// Heaps created and destroyed while other threads' flushes carry their
// retired segments: 4 workers, each over its own heap and its own
// heap-allocated OS layer (deleted right after ~heap: ASan sees any later
// call; tomb flag counts them otherwise), unmaps jittered so that flushes
// overlap; batched evictions (growing large frees), retire::now (frees of
// blocks over 32 MiB, trim, decay), growth in place (header-only
// retirements), and probes of dead handles (must never read intact).
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "tests/attack40/common.h"
#include "tests/rng.h"

using namespace attack40;

namespace {

struct jitter_os : tomb_os {
  using tomb_os::tomb_os;
  std::atomic<std::uint64_t> n{0};
  void unmap_arena(void* p, std::size_t b) noexcept override {
    const std::uint64_t k = n.fetch_add(1);
    if (k % 3 == 0) usleep(static_cast<useconds_t>(k % 200));
    else if (k % 3 == 1) sched_yield();
    tomb_os::unmap_arena(p, b);
  }
};

std::atomic<int> g_calls_after_death{0};
std::atomic<int> g_intact_dead{0};

void worker(int id, int rounds) {
  dropalloc::testing::rng r(0x40 + id);
  for (int round = 0; round < rounds; ++round) {
    auto* o = new jitter_os(os::system_os());
    auto* h = new core::heap(dropalloc::testing::with_os_no_decay(o, /*purger=*/round % 2 == 0));
    std::vector<std::pair<void*, std::uint64_t>> dead;
    std::size_t sz = kLarge + static_cast<std::size_t>(id) * 37 * kPage;
    for (int i = 0; i < 60; ++i) {
      const unsigned what = static_cast<unsigned>(r.below(100));
      if (what < 60) {
        sz += kPage;
        void* p = dropalloc::testing::allocate_large(*h, sz);
        dropalloc::testing::fill(p, 64, static_cast<std::size_t>(i));
        const std::uint64_t g = h->generation(p);
        h->deallocate(p);
        dead.emplace_back(p, g);
      } else if (what < 75) {
        // Growth in place: header-only retirements.
        void* p = dropalloc::testing::allocate_large(*h, kLarge);
        std::size_t s = kLarge;
        for (int k = 0; k < 6; ++k) {
          s += 64 * kPage;
          if (!h->grow_large_in_place(p, s)) break;
          if (h->usable_size(p) < s) std::fprintf(stderr, "usable_size after growth too small\n");
        }
        h->deallocate(p);
      } else if (what < 82) {
        void* p = dropalloc::testing::allocate_large(*h, (33u << 20) + static_cast<std::size_t>(i) * kPage);
        h->deallocate(p);  // not cached: retire::now
      } else if (what < 90) {
        h->trim();
      } else {
        h->decay(false);
      }
      for (auto& [p, g] : dead) {
        if (h->check(p, g) == dropalloc::block_state::intact) ++g_intact_dead;
      }
      if (dead.size() > 32) dead.erase(dead.begin(), dead.begin() + 16);
    }
    delete h;
    o->dead.store(true);
    const int after = o->calls_after_death.load();
    // A flush on another thread would call it after this point if ~heap
    // returned early: give it time to, then free it (ASan: use after free).
    if (r.chance(30)) usleep(500);
    g_calls_after_death += o->calls_after_death.load() + after * 0;
    delete o;
  }
}

}  // namespace

TEST_CASE("heaps and their OS layers destroyed while other threads' flushes carry their segments") {
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) ts.emplace_back(worker, i, 30);
  for (auto& t : ts) t.join();
  CHECK(g_calls_after_death.load() == 0);
  CHECK(g_intact_dead.load() == 0);
  core::unmap_deferred_segments();
}
