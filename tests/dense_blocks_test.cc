// Blocks sit back to back in their arena, so they share pages and straddle
// page boundaries. The drop check must stay exact for every page a block
// touches: a drop of any one page makes every block with data on it read
// `dropped`, and no other block; a block that reads `intact` holds exactly
// what was sealed. Each class below is tried with a drop on every page of the
// first blocks' run, so every boundary a block crosses is covered.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::uintptr_t kPage = 4096;

// Request sizes whose classes straddle pages in different ways: below a page
// (24, 1,400 and 3,000 B), just above one, and several pages.
constexpr std::size_t kSizes[] = {24, 1400, 3000, 4200, 5000, 9000, 20000};

void fill(std::byte* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((seed * 131u + i * 7u) % 251u + 1u);
}

std::uintptr_t page_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) & ~(kPage - 1); }

bool touches(const block_ref& b, std::size_t n, std::uintptr_t page) {
  auto a = reinterpret_cast<std::uintptr_t>(b.ptr);
  return a < page + kPage && a + n > page;
}

struct sealed_set {
  droppable_resource& res;
  std::size_t n;
  std::vector<block_ref> blocks;
  std::vector<std::vector<std::byte>> want;

  sealed_set(droppable_resource& r, std::size_t size, std::size_t count) : res(r), n(size) {
    for (std::size_t i = 0; i < count; ++i) {
      block_ref b = res.allocate_block(n, 8);  // 8: a 24 B request gets the 24 B class
      std::vector<std::byte> bytes(n);
      fill(bytes.data(), n, static_cast<std::uint32_t>(i + 1));
      std::memcpy(b.ptr, bytes.data(), n);
      REQUIRE(res.seal(b.ptr) == block_state::intact);
      blocks.push_back(b);
      want.push_back(std::move(bytes));
    }
  }
  ~sealed_set() {
    for (const block_ref& b : blocks) res.deallocate(b.ptr, n);
  }
  bool holds(std::size_t i) const { return std::memcmp(blocks[i].ptr, want[i].data(), n) == 0; }
};

}  // namespace

TEST_CASE("a drop of any page makes exactly the blocks with data on it read dropped") {
  for (std::size_t size : kSizes) {
    CAPTURE(size);
    // Enough blocks that some cross page boundaries: at least three pages' worth.
    const std::size_t count = std::max<std::size_t>(8, 3 * kPage / size + 2);
    std::size_t straddlers = 0;
    {
      droppable_resource probe;
      sealed_set s(probe, size, count);
      for (const block_ref& b : s.blocks) {
        if (page_of(b.ptr) != page_of(static_cast<std::byte*>(b.ptr) + size - 1)) ++straddlers;
      }
    }
    CHECK(straddlers > 0);  // the point of the test: blocks do straddle
    // Each page the blocks touch, dropped alone in a fresh resource (which
    // lays the blocks out the same way).
    std::size_t page_index = 0;
    for (;; ++page_index) {
      droppable_resource res;
      sealed_set s(res, size, count);
      std::vector<std::uintptr_t> pages;
      for (const block_ref& b : s.blocks) {
        for (std::uintptr_t p = page_of(b.ptr); p <= page_of(static_cast<std::byte*>(b.ptr) + size - 1); p += kPage) {
          if (std::find(pages.begin(), pages.end(), p) == pages.end()) pages.push_back(p);
        }
      }
      if (page_index >= pages.size()) break;
      std::uintptr_t page = pages[page_index];
      CAPTURE(page_index);
      REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(page), 1) == 0);
      for (std::size_t i = 0; i < count; ++i) {
        CAPTURE(i);
        block_state got = res.check(s.blocks[i]);
        if (touches(s.blocks[i], size, page)) {
          // Every byte of every block is non-zero: a block on the page lost data.
          CHECK(got == block_state::dropped);
          // A re-seal does not revive it.
          CHECK(res.seal(s.blocks[i]) == block_state::dropped);
        } else {
          CHECK(got == block_state::intact);
          CHECK(s.holds(i));
        }
      }
    }
    CHECK(page_index >= 3);
  }
}

TEST_CASE("a re-seal of a straddling block whose later page was lost answers dropped") {
  // The lost page is not the one the block starts in: its witness is kept per
  // page, not in the block's meta word.
  for (std::size_t size : kSizes) {
    CAPTURE(size);
    droppable_resource res;
    const std::size_t count = std::max<std::size_t>(8, 3 * kPage / size + 2);
    sealed_set s(res, size, count);
    bool tried = false;
    for (std::size_t i = 0; i < count && !tried; ++i) {
      auto* p = static_cast<std::byte*>(s.blocks[i].ptr);
      std::uintptr_t last = page_of(p + size - 1);
      if (last == page_of(p)) continue;
      tried = true;
      REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(last), 1) == 0);
      CHECK(res.seal(s.blocks[i]) == block_state::dropped);  // settled by the seal, not a check
      CHECK(res.check(s.blocks[i]) == block_state::dropped);
      // A verified rewrite revives it, and the neighbour on the lost page
      // still reads dropped.
      CHECK(res.write_and_seal(p, s.want[i].data(), size) == block_state::intact);
      CHECK(s.holds(i));
      if (i + 1 < count && touches(s.blocks[i + 1], size, last)) {
        CHECK(res.check(s.blocks[i + 1]) == block_state::dropped);
      }
    }
    CHECK(tried);
  }
}

TEST_CASE("a block whose portion on the lost page held only zeros stays intact, and holds what was sealed") {
  // Witnesses are per portion: a portion with no data has no witness, and a
  // drop there changes nothing the block held.
  droppable_resource res;
  const std::size_t size = 9000;
  block_ref a = res.allocate_block(size);
  block_ref b = res.allocate_block(size);
  auto* pb = static_cast<std::byte*>(b.ptr);
  std::memset(a.ptr, 0x11, size);
  std::memset(pb, 0, size);
  // Data only on b's first page portion.
  std::uintptr_t b_first = page_of(pb);
  std::size_t head = static_cast<std::size_t>(b_first + kPage - reinterpret_cast<std::uintptr_t>(pb));
  std::memset(pb, 0x22, head);
  REQUIRE(res.seal(a.ptr) == block_state::intact);
  REQUIRE(res.seal(b.ptr) == block_state::intact);
  std::uintptr_t b_last = page_of(pb + size - 1);
  REQUIRE(b_last > b_first);
  REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(b_last), 1) == 0);
  CHECK(res.check(b) == block_state::intact);
  for (std::size_t i = 0; i < size; ++i) {
    if (pb[i] != (i < head ? std::byte{0x22} : std::byte{0})) {
      FAIL("b changed at byte " << i);
      break;
    }
  }
  res.deallocate(a.ptr, size);
  res.deallocate(b.ptr, size);
}
