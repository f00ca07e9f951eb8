// Attacks on 69c6333: allocations of 4-64 KiB (every thread-cached class
// above the small ones) now pop from the thread cache inline, in the pmr
// front end and in the core heap. What must hold, for every such class:
// the alignment asked for (or a refusal), blocks that never overlap and are
// never handed out twice, double/interior/cross-thread double frees refused
// and counted, and a freed (sealed or observed) block's old generation never
// read intact again.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/core/size_class.h"
#include "allocator/core/thread_cache.h"
#include "allocator/dropalloc.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

std::uint64_t refused(const droppable_resource& r) { return r.stats().misuse_refused; }

// Sizes at every edge of every class from the largest small one up to past
// the largest cached one.
std::vector<std::size_t> edge_sizes() {
  std::vector<std::size_t> v;
  for (std::size_t cls = core::kNumSmallClasses - 1; cls <= core::kNumCachedClasses && cls < core::kNumClasses; ++cls) {
    const std::size_t e = core::kSizeClasses[cls].size;
    for (std::size_t s : {e - 1, e, e + 1}) v.push_back(s);
  }
  v.push_back(core::kMaxCachedSize + 1);
  v.push_back(4097);
  return v;
}

// Live intervals: no two may overlap.
struct intervals {
  std::map<std::uintptr_t, std::size_t> m;
  bool add(const void* p, std::size_t n) {
    auto a = reinterpret_cast<std::uintptr_t>(p);
    auto it = m.lower_bound(a);
    if (it != m.end() && it->first < a + n) return false;
    if (it != m.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second > a) return false;
    }
    m.emplace(a, n);
    return true;
  }
  void remove(const void* p) { m.erase(reinterpret_cast<std::uintptr_t>(p)); }
};

}  // namespace

TEST_CASE("pmr: every class edge 4 KiB-64 KiB at alignments 0..8192: aligned, disjoint, contents kept") {
  droppable_resource res;
  intervals live;
  struct blk {
    void* p;
    std::size_t n, a, seed;
  };
  std::vector<blk> blocks;
  std::size_t seed = 1;
  for (std::size_t n : edge_sizes()) {
    // Alignment 0 is left out: above 4 KiB it dies of SIGFPE (zero_alignment_bug_test).
    for (std::size_t a : {1, 2, 3, 8, 16, 24, 32, 48, 64, 4096, 8192}) {
      CAPTURE(n);
      CAPTURE(a);
      const bool bad = a == 0 || (a & (a - 1)) != 0;
      for (int k = 0; k < 3; ++k) {
        void* p = nullptr;
        try {
          p = res.allocate(n, a);
        } catch (const std::bad_alloc&) {
          REQUIRE(bad);
          continue;
        }
        REQUIRE_FALSE(bad);
        REQUIRE(p != nullptr);
        REQUIRE(reinterpret_cast<std::uintptr_t>(p) % a == 0);
        const std::size_t u = res.usable_size(p);
        REQUIRE(u >= n);
        REQUIRE(live.add(p, u));
        fill(p, n, seed);
        blocks.push_back({p, n, a, seed++});
      }
    }
  }
  for (const blk& b : blocks) {
    CAPTURE(b.n);
    REQUIRE(holds(b.p, b.n, b.seed));
  }
  for (const blk& b : blocks) res.deallocate(b.p, b.n, b.a);
  CHECK(refused(res) == 0);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("pmr: owner's double and interior frees of 4-64 KiB blocks are refused; no block comes back twice") {
  droppable_resource res;
  std::uint64_t expect = 0;
  for (std::size_t n : edge_sizes()) {
    if (n > core::kMaxCachedSize) continue;
    CAPTURE(n);
    void* p = res.allocate(n, 16);
    void* q = res.allocate(n, 16);
    res.deallocate(static_cast<char*>(p) + 64, n, 16);  // interior
    REQUIRE(refused(res) == ++expect);
    if (res.usable_size(static_cast<char*>(p) + 4096) == 0) {  // not the next live block
      res.deallocate(static_cast<char*>(p) + 4096, n, 16);  // interior, a page in
      REQUIRE(refused(res) == ++expect);
    }
    res.deallocate(p, n, 16);
    res.deallocate(p, n, 16);  // double free on the fast path's first try
    REQUIRE(refused(res) == ++expect);
    res.deallocate(q, n, 16);
    res.deallocate(p, n, 16);  // and again after other frees
    REQUIRE(refused(res) == ++expect);
    // Both came back once: a round of allocations is distinct.
    std::set<void*> seen;
    std::vector<void*> got;
    for (int i = 0; i < 3 * 256; ++i) {
      void* r = res.allocate(n, 16);
      REQUIRE(seen.insert(r).second);
      got.push_back(r);
    }
    for (void* r : got) res.deallocate(r, n, 16);
    REQUIRE(refused(res) == expect);
  }
}

TEST_CASE("pmr: two threads freeing the same 4-64 KiB block at once: exactly one wins") {
  droppable_resource res;
  constexpr int kRounds = 3000;
  std::atomic<void*> target{nullptr};
  std::atomic<int> go{0}, done{0};
  std::atomic<bool> stop{false};
  const std::size_t sizes[] = {4097, 8192, 16384, 20000, 32768, 65536};
  std::thread other([&] {
    for (int r = 1; r <= kRounds; ++r) {
      while (go.load(std::memory_order_acquire) < r) {
      }
      void* p = target.load();
      res.deallocate(p, 4097, 16);
      done.store(r, std::memory_order_release);
    }
  });
  std::uint64_t before = refused(res);
  for (int r = 1; r <= kRounds; ++r) {
    const std::size_t n = sizes[r % 6];
    void* p = res.allocate(n, 16);
    fill(p, 64, static_cast<std::size_t>(r));
    target.store(p);
    go.store(r, std::memory_order_release);
    res.deallocate(p, n, 16);
    while (done.load(std::memory_order_acquire) < r) {
    }
    REQUIRE(refused(res) - before == static_cast<std::uint64_t>(r));  // one of the two frees refused
    // Nothing handed out twice: a round of allocations on this thread is distinct.
    if (r % 50 == 0) {
      std::set<void*> seen;
      std::vector<void*> got;
      for (int i = 0; i < 40; ++i) {
        void* q = res.allocate(n, 16);
        REQUIRE(seen.insert(q).second);
        got.push_back(q);
      }
      for (void* q : got) res.deallocate(q, n, 16);
    }
  }
  stop = true;
  other.join();
}

TEST_CASE("pmr: cross-thread producer/consumer of 4-64 KiB blocks: never handed out twice") {
  droppable_resource res;
  constexpr int kBlocks = 20000;
  std::vector<std::atomic<void*>> ring(64);
  for (auto& s : ring) s.store(nullptr);
  std::atomic<bool> fail{false};
  std::mutex m;
  intervals live;  // every block handed out and not yet freed, either thread
  auto claim = [&](void* p, std::size_t n) {
    std::lock_guard<std::mutex> g(m);
    if (!live.add(p, n)) fail = true;
  };
  auto drop = [&](void* p) {
    std::lock_guard<std::mutex> g(m);
    live.remove(p);
  };
  std::thread consumer([&] {
    int got = 0;
    std::vector<void*> mine;
    while (got < kBlocks) {
      for (auto& s : ring) {
        void* p = s.exchange(nullptr);
        if (p == nullptr) continue;
        ++got;
        const std::size_t n = *static_cast<std::size_t*>(p);
        if (!holds(static_cast<char*>(p) + 8, 56, n)) fail = true;
        drop(p);
        res.deallocate(p, n, 16);
        // The consumer allocates too, from what it freed.
        void* q = res.allocate(n, 16);
        claim(q, n);
        mine.push_back(q);
        if (mine.size() > 32) {
          drop(mine.front());
          res.deallocate(mine.front(), 0, 16);
          mine.erase(mine.begin());
        }
      }
    }
    for (void* q : mine) {
      drop(q);
      res.deallocate(q, 0, 16);
    }
  });
  std::uint64_t x = 88172645463325252ull;
  for (int i = 0; i < kBlocks; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const std::size_t n = 4097 + x % (core::kMaxCachedSize - 4096);
    void* p = res.allocate(n, 16);
    claim(p, n);
    *static_cast<std::size_t*>(p) = n;
    fill(static_cast<char*>(p) + 8, 56, n);
    for (bool placed = false; !placed;) {
      for (auto& s : ring) {
        void* expected = nullptr;
        if (s.compare_exchange_strong(expected, p)) {
          placed = true;
          break;
        }
      }
    }
  }
  consumer.join();
  CHECK_FALSE(fail.load());
  CHECK(refused(res) == 0);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("pmr: sealed or observed 4-64 KiB blocks, freed and reused: old generations never intact") {
  droppable_resource res;
  for (std::size_t n : {4097, 8192, 12000, 32768, 65536}) {
    CAPTURE(n);
    for (int mode = 0; mode < 3; ++mode) {
      CAPTURE(mode);
      block_ref b = res.allocate_block(n);
      std::vector<unsigned char> src(n);
      fill(src.data(), n, n + mode);
      std::uint64_t old_gen = b.generation;
      if (mode == 0) {
        REQUIRE(res.write_and_seal(b, src.data(), n) == block_state::intact);
        old_gen = b.generation;
      } else if (mode == 1) {
        std::memcpy(b.ptr, src.data(), n);
        REQUIRE(res.seal(b) == block_state::intact);
        old_gen = b.generation;
      } else {
        old_gen = res.generation(b.ptr);  // observed, never sealed
        REQUIRE(old_gen != 0);
      }
      REQUIRE(res.check(b.ptr, old_gen) == (mode == 2 ? block_state::unsealed : block_state::intact));
      const std::uint64_t before = refused(res);
      res.deallocate(b.ptr, n, 16);  // plain pmr free: fast path first, then the slow one
      REQUIRE(refused(res) == before);
      REQUIRE(res.check(b.ptr, old_gen) == block_state::stale);
      res.deallocate(b);  // the handle's free: stale, refused
      REQUIRE(refused(res) == before + 1);
      res.deallocate(b.ptr, n, 16);  // double free
      REQUIRE(refused(res) == before + 2);
      // Take the same address again (fast path), write the same bytes, seal.
      std::vector<void*> got;
      void* again = nullptr;
      for (int i = 0; i < 64 && again == nullptr; ++i) {
        void* q = res.allocate(n, 16);
        if (q == b.ptr) again = q; else got.push_back(q);
      }
      REQUIRE(again != nullptr);
      std::memcpy(again, src.data(), n);
      REQUIRE(res.check(again, old_gen) == block_state::stale);
      REQUIRE(res.seal(again) == block_state::intact);
      REQUIRE(res.check(again, old_gen) == block_state::stale);
      REQUIRE(res.generation(again) != old_gen);
      res.deallocate(again, n, 16);
      for (void* q : got) res.deallocate(q, n, 16);
    }
  }
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("pmr: deallocate with a mismatched size or alignment keeps every block single") {
  droppable_resource res;
  intervals live;
  std::vector<std::pair<void*, std::size_t>> held;
  const std::size_t sizes[] = {4097, 5000, 8192, 16385, 40000, 65536};
  for (int round = 0; round < 200; ++round) {
    const std::size_t n = sizes[round % 6];
    void* p = res.allocate(n, 16);
    REQUIRE(live.add(p, res.usable_size(p)));
    held.emplace_back(p, n);
    if (held.size() > 8) {
      auto [q, qn] = held[static_cast<std::size_t>(round) % held.size()];
      held.erase(held.begin() + static_cast<long>(static_cast<std::size_t>(round) % held.size()));
      live.remove(q);
      // Wrong size (another cached class, a large one, 0) and wrong alignment.
      const std::size_t wrong[] = {qn / 2, qn * 8, 0, 1, 300000};
      res.deallocate(q, wrong[round % 5], round % 2 == 0 ? 16 : 8);
    }
  }
  for (auto [q, qn] : held) res.deallocate(q, qn, 16);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("core: edge pointers of every cached class above 4 KiB are refused by the free fast path") {
  core::heap h;
  core::alloc_error err;
  void* large = h.allocate(300 * 1024, 16, &err);
  REQUIRE(large != nullptr);
  std::uint64_t expect = 0;
  for (std::size_t cls = core::kNumSmallClasses; cls < core::kNumCachedClasses; ++cls) {
    const std::size_t size = core::kSizeClasses[cls].size;
    void* p = h.allocate(size, 16, &err);
    REQUIRE(p != nullptr);
    core::segment* s = core::segment_of(p);
    REQUIRE(s != nullptr);
    REQUIRE(s->fast_capacity == s->capacity);
    const auto base = reinterpret_cast<std::uintptr_t>(s->base);
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uint64_t bs = s->block_size;
    const std::uint64_t whole = std::uint64_t{s->capacity} * bs;
    CAPTURE(size);
    std::vector<std::uintptr_t> bad = {a + 16, a + 4096, a + bs - 16, base + s->span, base + s->span + bs,
                                       base + whole + bs, base + (std::uint64_t{1} << 47), base - bs,
                                       base + (std::uint64_t{1} << 22) - bs};
    if (whole < s->span) bad.push_back(base + whole);
    for (std::uintptr_t b : bad) {
      CAPTURE(b);
      if (h.usable_size(reinterpret_cast<void*>(b)) != 0) continue;
      h.deallocate(reinterpret_cast<void*>(b));
      REQUIRE(h.stats().misuse_refused == ++expect);
    }
    h.deallocate(p);
    h.deallocate(p);
    REQUIRE(h.stats().misuse_refused == ++expect);
  }
  h.deallocate(large);
  dropalloc::testing::require_distinct_blocks(h, core::kNumSmallClasses, core::kNumCachedClasses, 64, 16);
  REQUIRE(h.stats().misuse_refused == expect);
}
