// Generations and the drop check, against forced drops whose effect we know.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/pattern.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

using dropalloc::testing::fill;

namespace {

constexpr std::size_t kPage = 4096;

}  // namespace

TEST_CASE("a generation changes when a block is freed and handed out again") {
  droppable_resource res;
  auto a = res.allocate_block(100);
  CHECK(a.generation != 0);
  fill(a.ptr, 100, 1);
  CHECK(res.seal(a.ptr) == block_state::intact);
  CHECK(res.check(a.ptr, a.generation) == block_state::intact);
  res.deallocate(a.ptr, 100);
  CHECK(res.check(a.ptr, a.generation) == block_state::stale);
  CHECK(res.generation(a.ptr) == 0);
  // Allocate until the same address comes back.
  std::vector<void*> held;
  dropalloc::block_ref again;
  for (int i = 0; i < 100000 && again.ptr != a.ptr; ++i) {
    again = res.allocate_block(100);
    held.push_back(again.ptr);
  }
  REQUIRE(again.ptr == a.ptr);
  CHECK(again.generation != a.generation);
  fill(again.ptr, 100, 2);
  res.seal(again.ptr);
  CHECK(res.check(a.ptr, a.generation) == block_state::stale);
  CHECK(res.check(again.ptr, again.generation) == block_state::intact);
  for (void* p : held) res.deallocate(p, 100);
}

TEST_CASE("unsealed blocks are never vouched for; foreign pointers are named") {
  droppable_resource res, other;
  auto b = res.allocate_block(64);
  fill(b.ptr, 64, 3);
  CHECK(res.check(b.ptr, b.generation) == block_state::unsealed);
  CHECK_FALSE(res.is_intact(b));
  CHECK(other.check(b.ptr, b.generation) == block_state::foreign);
  CHECK(res.check(static_cast<char*>(b.ptr) + 8, b.generation) == block_state::foreign);
  int local = 0;
  CHECK(res.check(&local, 1) == block_state::stale);
  CHECK(res.seal(&local) == block_state::foreign);
  res.deallocate(b.ptr, 64);
}

TEST_CASE("dropping one page of a one-page block is detected") {
  droppable_resource res;
  for (std::size_t size : {8, 64, 100, 1000, 2048, 4096}) {
    CAPTURE(size);
    auto b = res.allocate_block(size);
    fill(b.ptr, size, 7);
    REQUIRE(res.seal(b.ptr) == block_state::intact);
    res.drop_for_testing(b.ptr, size);
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);  // sticky
    // A repeated seal() does not revive it; rewritten and sealed as such, it
    // is whole again.
    CHECK(res.seal(b.ptr) == block_state::dropped);
    fill(b.ptr, size, 8);
    CHECK(res.seal_rewritten(b) == block_state::intact);
    CHECK(res.is_intact(b));
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("dropping any one page of a multi-page block is detected, for it and a neighbour sharing the page only") {
  // Blocks sit back to back: the neighbour may have data on the dropped page
  // (then it lost data too), or not (then it must stay intact).
  droppable_resource res;
  std::size_t expected_drops = 0;
  for (std::size_t size : {std::size_t{5000}, std::size_t{64 * 1024}, std::size_t{256 * 1024},
                           std::size_t{3 << 20}}) {
    CAPTURE(size);
    std::size_t pages = (size + kPage - 1) / kPage;
    for (std::size_t victim : {std::size_t{0}, pages / 2, pages - 1}) {
      CAPTURE(victim);
      auto b = res.allocate_block(size);
      auto n = res.allocate_block(size);
      fill(b.ptr, size, 11);
      fill(n.ptr, size, 12);
      REQUIRE(res.seal(b.ptr) == block_state::intact);
      REQUIRE(res.seal(n.ptr) == block_state::intact);
      char* hit = static_cast<char*>(b.ptr) + victim * kPage;
      res.drop_for_testing(hit, 1);
      auto page = reinterpret_cast<std::uintptr_t>(hit) & ~std::uintptr_t{kPage - 1};
      auto na = reinterpret_cast<std::uintptr_t>(n.ptr);
      bool shares = na < page + kPage && na + size > page;
      CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
      CHECK(res.check(n.ptr, n.generation) == (shares ? block_state::dropped : block_state::intact));
      expected_drops += shares ? 2 : 1;
      res.deallocate(b.ptr, size);
      res.deallocate(n.ptr, size);
    }
  }
  CHECK(res.stats().drops_detected == expected_drops);
}

TEST_CASE("pages that held only zeros lose nothing when dropped") {
  droppable_resource res;
  std::size_t size = 8 * kPage;
  auto b = res.allocate_block(size);
  std::memset(b.ptr, 0, size);
  fill(static_cast<char*>(b.ptr) + 3 * kPage + 100, 50, 5);  // one page with data, mostly zero
  REQUIRE(res.seal(b.ptr) == block_state::intact);
  res.drop_for_testing(b.ptr, 3 * kPage);                   // zero pages only
  res.drop_for_testing(static_cast<char*>(b.ptr) + 4 * kPage, 4 * kPage);
  CHECK(res.check(b.ptr, b.generation) == block_state::intact);
  res.drop_for_testing(static_cast<char*>(b.ptr) + 3 * kPage, 1);
  CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
  auto z = res.allocate_block(256);
  std::memset(z.ptr, 0, 256);
  REQUIRE(res.seal(z.ptr) == block_state::intact);
  res.drop_for_testing(z.ptr, 256);
  CHECK(res.check(z.ptr, z.generation) == block_state::intact);  // all zeros: nothing lost
  res.deallocate(z.ptr, 256);
  res.deallocate(b.ptr, size);
}

TEST_CASE("a page shared by small blocks takes all of them when dropped") {
  droppable_resource res;
  std::vector<dropalloc::block_ref> blocks;
  for (int i = 0; i < 200; ++i) {
    auto b = res.allocate_block(48);
    fill(b.ptr, 48, static_cast<std::uint32_t>(i));
    res.seal(b.ptr);
    blocks.push_back(b);
  }
  auto* victim_page = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(blocks[50].ptr) & ~(kPage - 1));
  res.drop_for_testing(victim_page, kPage);
  for (auto& b : blocks) {
    bool on_page = static_cast<char*>(b.ptr) >= victim_page && static_cast<char*>(b.ptr) < victim_page + kPage;
    CHECK(res.check(b.ptr, b.generation) == (on_page ? block_state::dropped : block_state::intact));
  }
  for (auto& b : blocks) res.deallocate(b.ptr, 48);
}

TEST_CASE("whole arenas dropped at once: every sealed block with data is reported") {
  droppable_resource res;
  std::vector<dropalloc::block_ref> blocks;
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::size_t size = 1 + rng() % 20000;
    auto b = res.allocate_block(size);
    fill(b.ptr, size, rng());
    res.seal(b.ptr);
    blocks.push_back(b);
  }
  CHECK(res.check_all().intact == 3000);
  res.drop_all_for_testing();
  for (auto& b : blocks) CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
  auto sweep = res.check_all();
  CHECK(sweep.dropped == 3000);
  CHECK(sweep.intact == 0);
}

TEST_CASE("random drops: the intact answer matches the truth for every block") {
  droppable_resource res;
  std::mt19937 rng(7);
  struct rec {
    dropalloc::block_ref ref;
    std::size_t size;
    std::vector<unsigned char> truth;
  };
  for (int round = 0; round < 20; ++round) {
    std::vector<rec> blocks;
    for (int i = 0; i < 400; ++i) {
      std::size_t size = 1 + rng() % (rng() % 4 == 0 ? 40000 : 3000);
      rec r{res.allocate_block(size), size, std::vector<unsigned char>(size)};
      // A mix of contents: random bytes, long zero prefixes, all zeros.
      int kind = static_cast<int>(rng() % 10);
      for (std::size_t j = 0; j < size; ++j) {
        r.truth[j] = kind == 0 ? 0 : (kind <= 2 && j < size * 3 / 4) ? 0 : static_cast<unsigned char>(rng());
      }
      std::memcpy(r.ref.ptr, r.truth.data(), size);
      REQUIRE(res.seal(r.ref.ptr) == block_state::intact);
      blocks.push_back(std::move(r));
    }
    // Drop ~5% of the pages these blocks touch.
    for (auto& r : blocks) {
      auto first = reinterpret_cast<std::uintptr_t>(r.ref.ptr) / kPage;
      auto last = (reinterpret_cast<std::uintptr_t>(r.ref.ptr) + r.size - 1) / kPage;
      for (auto pg = first; pg <= last; ++pg) {
        if (rng() % 20 == 0) res.drop_for_testing(reinterpret_cast<void*>(pg * kPage), kPage);
      }
    }
    for (auto& r : blocks) {
      block_state s = res.check(r.ref.ptr, r.ref.generation);
      bool same = std::memcmp(r.ref.ptr, r.truth.data(), r.size) == 0;
      CAPTURE(r.size);
      // Never "intact" with wrong contents; always "dropped" when data was lost.
      // (A block can be reported dropped with its requested bytes unchanged when
      // only zeros of it were lost plus stale bytes of its class slack.)
      if (s == block_state::intact) CHECK(same);
      if (!same) CHECK(s == block_state::dropped);
      CHECK((s == block_state::intact || s == block_state::dropped));
    }
    for (auto& r : blocks) res.deallocate(r.ref.ptr, r.size);
  }
}

TEST_CASE("seal_all seals every unsealed live block with one pass") {
  droppable_resource res;
  std::pmr::vector<std::pmr::string> v(&res);
  for (int i = 0; i < 1000; ++i) v.emplace_back(200, static_cast<char>('a' + i % 26));
  auto before = res.check_all();
  CHECK(before.unsealed == res.stats().blocks_live);
  CHECK(res.seal_all() == res.stats().blocks_live);
  auto after = res.check_all();
  CHECK(after.intact == res.stats().blocks_live);
  CHECK(after.unsealed == 0);
  res.drop_for_testing(v[500].data(), 1);
  CHECK(res.check_all().dropped >= 1);
}

TEST_CASE("the drop hook refuses memory that is not the resource's own") {
  droppable_resource res, other;
  std::vector<unsigned char> heap_bytes(3 * kPage, 0x5a);
  CHECK(res.drop_for_testing(heap_bytes.data() + kPage, kPage) == EINVAL);
  CHECK(heap_bytes[kPage + 10] == 0x5a);
  void* theirs = other.allocate(64, 8);
  std::memset(theirs, 1, 64);
  CHECK(res.drop_for_testing(theirs, 64) == EINVAL);
  CHECK(static_cast<unsigned char*>(theirs)[0] == 1);
  void* mine = res.allocate(64, 8);
  CHECK(res.drop_for_testing(mine, 64) == 0);
  res.deallocate(mine, 64, 8);
  other.deallocate(theirs, 64, 8);
}

TEST_CASE("write_and_seal copies, seals and verifies") {
  droppable_resource res;
  std::vector<unsigned char> src(3 * kPage + 123);
  fill(src.data(), src.size(), 99);
  auto b = res.allocate_block(src.size());
  CHECK(res.write_and_seal(b, src.data(), src.size()) == block_state::intact);
  CHECK(std::memcmp(b.ptr, src.data(), src.size()) == 0);
  CHECK(res.is_intact(b));
  res.drop_for_testing(static_cast<char*>(b.ptr) + kPage, 1);
  CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
  CHECK(res.write_and_seal(b, src.data(), src.size()) == block_state::intact);
  CHECK(res.is_intact(b));
  // Too long for the block, or not a block: refused, nothing written.
  std::vector<unsigned char> longer(res.usable_size(b.ptr) + 1, 7);
  CHECK_THROWS_AS(res.write_and_seal(b.ptr, longer.data(), longer.size()), std::length_error);
  CHECK(res.is_intact(b));
  int local = 0;
  CHECK(res.write_and_seal(&local, src.data(), 4) == block_state::foreign);
  CHECK(res.write_and_seal(nullptr, src.data(), 4) == block_state::foreign);
  CHECK(local == 0);
  res.deallocate(b.ptr, src.size());
}

TEST_CASE("write_and_seal of a short value into a long block: the tail reads zero, and only the value's pages count") {
  droppable_resource res;
  // 16 or more whole pages past the value go back to the OS in one call;
  // fewer are zeroed word by word. Both must read as zeros afterwards, hold
  // no witness (dropping them loses nothing) and leave the value's pages
  // watched. The block first holds other bytes everywhere: a reused block.
  for (std::size_t pages : {8u, 20u, 64u}) {
    for (std::size_t n : {std::size_t{1}, kPage - 5, 3 * kPage + 1}) {
      CAPTURE(pages);
      CAPTURE(n);
      const std::size_t size = pages * kPage;
      auto b = res.allocate_block(size);
      std::memset(b.ptr, 0x5a, size);
      std::vector<unsigned char> src(n);
      fill(src.data(), n, static_cast<int>(pages + n));
      REQUIRE(res.write_and_seal(b, src.data(), n) == block_state::intact);
      const auto* p = static_cast<const unsigned char*>(b.ptr);
      CHECK(std::memcmp(p, src.data(), n) == 0);
      std::size_t nonzero = 0;
      for (std::size_t i = n; i < size; ++i) nonzero += p[i] != 0;
      CHECK(nonzero == 0);
      // Pages wholly past the value: nothing to lose.
      const std::size_t first_tail_page = (n + kPage - 1) / kPage;
      for (std::size_t pg = first_tail_page; pg < pages; pg += 5) {
        REQUIRE(res.drop_for_testing(static_cast<char*>(b.ptr) + pg * kPage, kPage) == 0);
      }
      CHECK(res.check(b) == block_state::intact);
      // The value's last page is watched.
      REQUIRE(res.drop_for_testing(static_cast<char*>(b.ptr) + (n - 1) / kPage * kPage, 1) == 0);
      CHECK(res.check(b) == block_state::dropped);
      res.deallocate(b.ptr, size);
    }
  }
}

TEST_CASE("a page's only non-zero word witnesses it, wherever in the page it lies") {
  // The witness search starts at a cache line that depends on the page and
  // wraps around, so a word before that line, at it, after it, and at either
  // end of the page must each be found (a missed one would leave the page
  // without a witness, and its drop unseen). Every word position of every
  // page, for a page-aligned block (64 KiB) and one whose portions start and
  // end inside pages (3000 bytes over a page boundary).
  droppable_resource res;
  for (std::size_t size : {std::size_t{64 * 1024}, std::size_t{3000}}) {
    CAPTURE(size);
    std::vector<void*> others;
    void* p = res.allocate(size);
    while (reinterpret_cast<std::uintptr_t>(p) / kPage == (reinterpret_cast<std::uintptr_t>(p) + size - 1) / kPage) {
      others.push_back(p);
      p = res.allocate(size);
    }
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    for (std::uintptr_t page = start / kPage; page <= (start + size - 1) / kPage; ++page) {
      const std::uintptr_t from = std::max(page * kPage, start);
      const std::uintptr_t to = std::min((page + 1) * kPage, start + size);
      for (std::uintptr_t word = (from + 7) / 8 * 8; word + 8 <= to; word += 8) {
        CAPTURE(page - start / kPage);
        CAPTURE(word - page * kPage);
        std::memset(p, 0, size);
        const std::uint64_t one = 0x0100000000000001ull;
        std::memcpy(reinterpret_cast<void*>(word), &one, 8);
        REQUIRE(res.seal_rewritten(p) == block_state::intact);
        const std::uint64_t gen = res.generation(p);
        REQUIRE(res.check(p, gen) == block_state::intact);
        res.drop_for_testing(reinterpret_cast<void*>(page * kPage), kPage);
        REQUIRE(res.check(p, gen) == block_state::dropped);
      }
    }
    res.deallocate(p, size);
    for (void* o : others) res.deallocate(o, size);
  }
}
