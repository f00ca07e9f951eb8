// Random histories over shared slots from several threads: large blocks of
// changing sizes (300 KiB - 12 MiB, so frees evict from the large cache and
// fill retire::batched batches by count and by bytes), growths in place
// (retire_header), seals, frees, trim() and decay passes, against a shadow
// model. Other threads probe live and dead handles all the while:
//   - a dead handle (p, gen) never checks `intact`, and generation(p) never
//     answers gen again (the address may be a new block by then);
//   - a live block's contents survive growth; after a growth the old
//     generation is stale;
//   - nothing crashes (no read of an unmapped header or arena).
// The real OS layer: a late read of unmapped memory faults.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "tests/pattern.h"
#include "tests/rng.h"

namespace core = dropalloc::core;
using dropalloc::block_state;
using dropalloc::testing::rng;

namespace {

constexpr std::size_t kPage = 4096;
constexpr int kSlots = 48;
constexpr int kGrave = 512;

struct slot {
  std::atomic<int> busy{0};
  void* p = nullptr;
  std::size_t size = 0;
  std::uint64_t gen = 0;  // sealed generation, or generation()
  bool sealed = false;
  std::size_t seed = 0;
  int heap = 0;
  std::atomic<void*> pub{nullptr};  // p, for other threads' racing probes
};

struct dead_handle {
  std::atomic<std::uintptr_t> p{0};
  std::atomic<std::uint64_t> gen{0};
};

struct world {
  core::heap* heaps[2];
  slot slots[kSlots];
  dead_handle grave[kGrave];
  std::atomic<std::uint32_t> grave_next{0};
  std::atomic<int> failures{0};
  std::mutex log_lock;
  std::atomic<std::uint64_t> ops{0}, grows{0}, grow_ok{0}, probes{0}, trims{0};

  void fail(const char* what, const void* p, std::uint64_t a = 0, std::uint64_t b = 0) {
    std::lock_guard<std::mutex> g(log_lock);
    if (failures.fetch_add(1) < 20) MESSAGE(std::string(what), " p=", p, " a=", a, " b=", b);
  }
  void bury(void* p, std::uint64_t gen) {
    std::uint32_t i = grave_next.fetch_add(1) % kGrave;
    grave[i].p.store(0);
    grave[i].gen.store(gen);
    grave[i].p.store(reinterpret_cast<std::uintptr_t>(p));
  }
};

std::size_t draw_size(rng& r) {
  switch (r.below(4)) {
    case 0: return 300 * 1024 + r.below(200) * kPage;              // 300 KiB - 1.1 MiB
    case 1: return 1024 * 1024 + r.below(800) * kPage;             // 1 - 4.2 MiB
    case 2: return 4 * 1024 * 1024 + r.below(2048) * kPage;        // 4 - 12 MiB
    default: return 300 * 1024 + r.below(32) * kPage;              // small growable ones
  }
}

void fill_ends(void* p, std::size_t size, std::size_t seed) {
  dropalloc::testing::fill(p, kPage, seed);
  dropalloc::testing::fill(static_cast<char*>(p) + size - kPage, kPage, seed + 1);
}
bool holds_ends(void* p, std::size_t size, std::size_t seed) {
  return dropalloc::testing::holds(p, kPage, seed) &&
         dropalloc::testing::holds(static_cast<char*>(p) + size - kPage, kPage, seed + 1);
}

void worker(world& w, std::uint64_t seed, std::chrono::steady_clock::time_point until) {
  rng r{seed};
  while (std::chrono::steady_clock::now() < until) {
    w.ops.fetch_add(1, std::memory_order_relaxed);
    const unsigned op = static_cast<unsigned>(r.below(100));
    if (op < 60) {
      slot& s = w.slots[r.below(kSlots)];
      int expected = 0;
      if (!s.busy.compare_exchange_strong(expected, 1)) continue;
      core::heap& h = *w.heaps[s.heap];
      if (s.p == nullptr) {
        s.size = draw_size(r);
        s.seed = r.next() % 1000;
        core::alloc_error err = core::alloc_error::none;
        s.p = h.allocate(s.size, 16, &err);
        if (s.p != nullptr) {
          s.pub.store(s.p);
          fill_ends(s.p, s.size, s.seed);
          s.sealed = false;
          s.gen = 0;  // generation() observes it, and an observed block never grows in place
          if (r.chance(20)) {
            s.gen = h.generation(s.p);
            if (s.gen == 0) w.fail("fresh block has no generation", s.p);
            if (h.check(s.p, s.gen) == block_state::intact) w.fail("unsealed block intact", s.p);
          }
        }
      } else if (op < 25) {  // free
        if (!s.sealed && !holds_ends(s.p, s.size, s.seed)) w.fail("contents lost before free", s.p, s.size);
        void* p = s.p;
        std::uint64_t g = s.gen != 0 ? s.gen : h.generation(p);
        s.pub.store(nullptr);
        h.deallocate(p);
        s.p = nullptr;
        w.bury(p, g);
      } else if (op < 45 && !s.sealed) {  // grow in place
        w.grows.fetch_add(1, std::memory_order_relaxed);
        std::size_t bigger = s.size + (1 + r.below(64)) * kPage * (r.chance(30) ? 16 : 1);
        if (bigger > 12u << 20) bigger = s.size + kPage;
        const std::uint64_t old_gen = s.gen;
        if (h.grow_large_in_place(s.p, bigger)) {
          w.grow_ok.fetch_add(1, std::memory_order_relaxed);
          if (!dropalloc::testing::holds(s.p, kPage, s.seed) ||
              !dropalloc::testing::holds(static_cast<char*>(s.p) + s.size - kPage, kPage, s.seed + 1)) {
            w.fail("contents lost by growth", s.p, s.size, bigger);
          }
          s.size = bigger;
          fill_ends(s.p, s.size, s.seed);
          if (r.chance(30)) {
            s.gen = h.generation(s.p);
            if (s.gen == 0) w.fail("grown block has no generation", s.p);
            if (h.usable_size(s.p) < bigger) w.fail("usable_size below the growth", s.p, h.usable_size(s.p), bigger);
          }
          (void)old_gen;
        }
      } else if (op < 55 && !s.sealed) {  // seal
        std::uint64_t g = 0;
        if (!holds_ends(s.p, s.size, s.seed)) w.fail("contents lost before seal", s.p);
        block_state st = h.seal(s.p, &g);
        if (st == block_state::intact) {
          s.sealed = true;
          s.gen = g;
          if (h.check(s.p, g) != block_state::intact && h.check(s.p, g) != block_state::dropped) {
            w.fail("sealed block not intact", s.p);
          }
        }
      } else if (s.sealed) {
        block_state st = h.check(s.p, s.gen);
        if (st != block_state::intact && st != block_state::dropped) w.fail("own sealed block", s.p, static_cast<int>(st));
      }
      s.busy.store(0);
    } else if (op < 75) {  // probe other threads' live blocks (no observation), racing growths and frees
      w.probes.fetch_add(1, std::memory_order_relaxed);
      slot& s = w.slots[r.below(kSlots)];
      void* p = s.pub.load();
      if (p == nullptr) continue;
      for (core::heap* h : w.heaps) {
        (void)h->usable_size(p);
        (void)h->owns(p);
        if (h->check(p, ~std::uint64_t{0} >> 2) == block_state::intact) w.fail("a never-issued generation intact", p);
        (void)h->usable_size(static_cast<char*>(p) + (r.below(3072) * kPage));
      }
    } else if (op < 95) {  // probe dead handles, racing everything
      w.probes.fetch_add(1, std::memory_order_relaxed);
      dead_handle& d = w.grave[r.below(kGrave)];
      std::uintptr_t a = d.p.load();
      std::uint64_t g = d.gen.load();
      if (a == 0 || d.p.load() != a) continue;
      void* p = reinterpret_cast<void*>(a);
      for (core::heap* h : w.heaps) {
        block_state st = h->check(p, g);
        if (st == block_state::intact && d.gen.load() == g && d.p.load() == a) {
          w.fail("dead handle checks intact", p, g);
        }
        std::uint64_t now = h->generation(p);
        if (now == g && g != 0 && d.gen.load() == g && d.p.load() == a) {
          // generation() answers the current life's: equal to a dead one's
          // means the dead life is current again.
          w.fail("dead generation current again", p, g);
        }
        (void)h->usable_size(p);
        (void)h->owns(p);
        (void)h->usable_size(static_cast<char*>(p) + kPage);  // inside, not a block start
      }
    } else if (op < 98) {
      w.heaps[r.below(2)]->decay(false);
    } else {
      w.trims.fetch_add(1, std::memory_order_relaxed);
      w.heaps[r.below(2)]->trim();
    }
  }
}

}  // namespace

TEST_CASE("random large churn with growths, seals and dead-handle probes from several threads") {
  const char* env = std::getenv("ATTACK39_SECONDS");
  const int seconds = env != nullptr ? std::atoi(env) : 15;
  const char* seed_env = std::getenv("ATTACK39_SEED");
  const std::uint64_t base = seed_env != nullptr ? std::strtoull(seed_env, nullptr, 10) : 39;
  core::heap_options opt;
  opt.empty_arena_decay_ms = 5;
  core::heap h0(opt), h1(opt);
  auto* w = new world;
  w->heaps[0] = &h0;
  w->heaps[1] = &h1;
  for (int i = 0; i < kSlots; ++i) w->slots[i].heap = i % 2;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) ts.emplace_back(worker, std::ref(*w), dropalloc::testing::derived_seed(base, t), until);
  for (auto& t : ts) t.join();
  MESSAGE("ops ", w->ops.load(), " grows ", w->grows.load(), " grown in place ", w->grow_ok.load(), " probes ",
          w->probes.load(), " trims ", w->trims.load());
  for (auto& s : w->slots) {
    if (s.p != nullptr) w->heaps[s.heap]->deallocate(s.p);
  }
  CHECK(w->failures.load() == 0);
  h0.trim();
  h1.trim();
  CHECK(h0.stats().blocks_live == 0);
  CHECK(h1.stats().blocks_live == 0);
  delete w;
}
