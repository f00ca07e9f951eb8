// Deterministic cases of the bits (fake OS, MAP_DROPPABLE, recording):
//  - the entry's own block freed before the queue is given: its bits are
//    still advised (coverage), its own page is not (over-advice);
//  - a bit's block freed and handed out again, live and written: not
//    advised; handed out again and sealed: advised;
//  - a bit 63 blocks after the entry, and one 64 after (a new entry);
//  - blocks straddling pages (3000 B) sealed descending then ascending;
//  - a large block's earlier life queued, the block grown in place
//    (heap::grow_large_in_place: a new header at the same base, after
//    raise_generation_floor), sealed in its new life, the queue given.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
using dropalloc::block_state;

namespace {
struct fixture : dropalloc::testing::recorded_heap {
  // No thread cache: frees go straight back, and the next allocation takes
  // the lowest free block.
  fixture() : recorded_heap(false) {}
  std::vector<void*> run(std::size_t size, std::size_t n, bool adjacent = true) {
    std::vector<void*> v;
    for (std::size_t i = 0; i < n; ++i) {
      v.push_back(dropalloc::testing::allocate_large(h, size));
      const std::size_t stride = h.usable_size(v.back());
      std::memset(v.back(), static_cast<int>(i % 250 + 1), stride);
      if (adjacent && i > 0) REQUIRE(static_cast<char*>(v[i]) == static_cast<char*>(v[i - 1]) + stride);  // one arena
    }
    return v;
  }
  bool advised(void* p, std::uint64_t since) { return rec.advised(reinterpret_cast<std::uintptr_t>(p), since); }
};
}  // namespace

TEST_CASE("entry block freed: its bits advised, its page not; a bit's block reused live: not advised") {
  fixture f;
  auto v = f.run(4096, 8);  // a page each
  const auto m0 = f.rec.mark();
  for (int i = 0; i < 6; ++i) REQUIRE(f.h.seal(v[i]) == block_state::intact);  // entry 0, bits 1..5
  f.h.deallocate(v[0]);
  f.h.deallocate(v[2]);
  void* again = dropalloc::testing::allocate_large(f.h, 4096);
  void* again2 = dropalloc::testing::allocate_large(f.h, 4096);
  REQUIRE(((again == v[0] && again2 == v[2]) || (again == v[2] && again2 == v[0])));
  std::memset(v[0], 7, 4096);
  std::memset(v[2], 8, 4096);  // live, written, not sealed
  CHECK(f.rec.bytes_since(m0) == 0);
  f.h.decay(false);
  CHECK_FALSE(f.advised(v[0], m0));
  CHECK_FALSE(f.advised(v[2], m0));
  for (int i : {1, 3, 4, 5}) CHECK(f.advised(v[i], m0));
  CHECK_FALSE(f.advised(v[6], m0));
  // v[2] sealed again (after v[1]: a bit of nothing, the queue is empty: an entry).
  const auto m1 = f.rec.mark();
  REQUIRE(f.h.seal(v[2]) == block_state::intact);
  f.h.decay(false);
  CHECK(f.advised(v[2], m1));
  CHECK_FALSE(f.advised(v[0], m1));
  for (void* p : v) f.h.deallocate(p);
}

TEST_CASE("a bit 63 blocks after the entry, a block 64 after takes an entry; both advised, nothing between") {
  fixture f;
  auto all = f.run(4096, 300, false);  // arenas of 16, 32, 64, 128... blocks
  std::size_t k = 0, len = 1;
  for (std::size_t i = 1; i < all.size() && len < 70; ++i) {
    if (static_cast<char*>(all[i]) == static_cast<char*>(all[i - 1]) + 4096) {
      ++len;
    } else {
      k = i;
      len = 1;
    }
  }
  REQUIRE(len == 70);
  std::vector<void*> v(all.begin() + static_cast<long>(k), all.begin() + static_cast<long>(k) + 70);
  const auto m0 = f.rec.mark();
  REQUIRE(f.h.seal(v[0]) == block_state::intact);
  REQUIRE(f.h.seal(v[63]) == block_state::intact);
  REQUIRE(f.h.seal(v[64]) == block_state::intact);
  f.h.decay(false);
  CHECK(f.advised(v[0], m0));
  CHECK(f.advised(v[63], m0));
  CHECK(f.advised(v[64], m0));
  for (int i = 1; i < 63; ++i) CHECK_FALSE(f.advised(v[i], m0));
  CHECK(f.rec.bytes_since(m0) == 3 * 4096);
  for (void* p : all) f.h.deallocate(p);
}

TEST_CASE("3000 B blocks sealed descending, then ascending from below: every page of each advised") {
  fixture f;
  auto v = f.run(3000, 20);
  const std::size_t sz = f.h.usable_size(v[0]);
  REQUIRE(4096 % sz != 0);  // straddles pages
  const auto m0 = f.rec.mark();
  for (int i = 19; i >= 10; --i) REQUIRE(f.h.seal(v[i]) == block_state::intact);
  for (int i = 0; i < 10; i += 2) REQUIRE(f.h.seal(v[i]) == block_state::intact);
  f.h.decay(false);
  auto covered = [&](int i) {
    const auto a = reinterpret_cast<std::uintptr_t>(v[i]);
    for (std::uintptr_t pg = a / 4096; pg <= (a + sz - 1) / 4096; ++pg) {
      if (!f.rec.advised(pg * 4096, m0)) return false;
    }
    return true;
  };
  for (int i = 10; i < 20; ++i) CHECK(covered(i));
  for (int i = 0; i < 10; i += 2) CHECK(covered(i));
  // Odd blocks below 10 are live: a page of one is advised only if a sealed
  // neighbour touches it.
  for (std::uintptr_t pg : f.rec.pages_since(m0)) {
    bool touches = false;
    for (int i = 0; i < 20; ++i) {
      if (i < 10 && i % 2 == 1) continue;
      const auto a = reinterpret_cast<std::uintptr_t>(v[i]);
      if (a / 4096 <= pg / 4096 && pg / 4096 <= (a + sz - 1) / 4096) touches = true;
    }
    CHECK(touches);
  }
  for (void* p : v) f.h.deallocate(p);
}

TEST_CASE("a large block's old life queued, grown in place, sealed again: advised; generations apart") {
  fixture f;
  // Retried with fresh mappings while the address space after one is taken.
  std::vector<void*> failed;
  void* q = nullptr;
  std::uint64_t g1 = 0;
  for (int i = 0; i < 8 && q == nullptr; ++i) {
    void* p = dropalloc::testing::allocate_large(f.h, 640 * 1024);
    std::memset(p, 1, 640 * 1024);
    REQUIRE(f.h.seal(p, &g1) == block_state::intact);  // queued (160 pages)
    f.h.deallocate(p);                                 // cached, entry still queued
    void* r = dropalloc::testing::allocate_large(f.h, 640 * 1024);  // the cached mapping, reused
    REQUIRE(r == p);
    if (f.h.grow_large_in_place(r, 2048 * 1024)) q = r;
    else failed.push_back(r);
  }
  INFO("extends tried: " << f.fake.extends.load());
  REQUIRE(q != nullptr);
  for (void* p : failed) f.h.deallocate(p);
  std::memset(q, 2, 2048 * 1024);
  const auto m1 = f.rec.mark();
  std::uint64_t g2 = 0;
  REQUIRE(f.h.seal(q, &g2) == block_state::intact);
  CHECK(g2 > g1);
  f.h.decay(false);
  CHECK(f.h.check(q, g2) == block_state::intact);
  CHECK(f.h.check(q, g1) == block_state::stale);
  for (std::size_t off = 0; off < 2048 * 1024; off += 4096) {
    if (!f.rec.advised(reinterpret_cast<std::uintptr_t>(q) + off, m1)) {
      FAIL_CHECK("page at offset " << off << " not advised");
      break;
    }
  }
  f.h.deallocate(q);
}
