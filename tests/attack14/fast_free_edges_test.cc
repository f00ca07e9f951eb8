// The free fast path without its span check: for every small class, frees of
// pointers around an arena's edges, into the tail that holds no whole block,
// at addresses that alias the arena in the masked address map, into a large
// block, into another heap's arena and into the unmapped part of the arena's
// 4 MiB map entry. The calling thread has a reader slot and a current cache,
// so each free first tries the fast path. Every one must be refused and
// counted, and the live blocks must come back exactly once.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/core/size_class.h"
#include "tests/core_heap.h"

using dropalloc::core::alloc_error;
using dropalloc::core::heap;
using dropalloc::core::segment;

namespace {

std::uint64_t refused(const heap& h) { return h.stats().misuse_refused; }

// Frees p and requires that it was refused (counted once, nothing freed).
void refuse(heap& h, std::uintptr_t a, std::uint64_t& expect) {
  h.deallocate(reinterpret_cast<void*>(a));
  ++expect;
  REQUIRE(refused(h) == expect);
}

}  // namespace

TEST_CASE("edge pointers of every small class's arena are refused on the free fast path") {
  heap h;
  heap other;
  alloc_error err;
  void* large = h.allocate(300 * 1024, 16, &err);
  REQUIRE(large != nullptr);
  void* theirs = other.allocate(64, 16, &err);
  REQUIRE(theirs != nullptr);
  std::uint64_t expect = 0;
  for (std::size_t cls = 0; cls < dropalloc::core::kNumSmallClasses; ++cls) {
    const std::size_t size = dropalloc::core::kSizeClasses[cls].size;
    std::size_t align = 8;
    while (align < 16 && size % (align * 2) == 0) align *= 2;
    void* p = h.allocate(size, align, &err);
    REQUIRE(p != nullptr);
    REQUIRE(h.owns(p));  // the thread has a reader slot: frees try the fast path
    segment* s = dropalloc::core::segment_of(p);
    REQUIRE(s != nullptr);
    REQUIRE(s->fast_capacity == s->capacity);
    const auto base = reinterpret_cast<std::uintptr_t>(s->base);
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uint64_t bs = s->block_size;
    const std::uint64_t whole = std::uint64_t{s->capacity} * bs;
    CAPTURE(size);
    CAPTURE(s->span);
    CAPTURE(whole);
    std::vector<std::uintptr_t> bad = {
        a + 1,
        a - 1,
        a + bs - 1,
        a + 8,
        base + s->span,        // one past the arena
        base + s->span - 1,
        base + s->span + bs,   // the next block start past the arena
        base + whole + bs,     // two blocks past the last whole block
        base + (std::uint64_t{1} << 22) - bs,  // the end of the 4 MiB map entry
        base + (std::uint64_t{1} << 42),       // offsets the product check cannot reach
        base + (std::uint64_t{1} << 47),       // aliases the arena in the masked map
        base + (std::uint64_t{1} << 48),
        base ^ (std::uint64_t{0xffff} << 48),  // non-canonical, same low bits
        base - bs,
        base - 1,
        reinterpret_cast<std::uintptr_t>(large) + 4096,
        reinterpret_cast<std::uintptr_t>(large) + 1,
        reinterpret_cast<std::uintptr_t>(theirs),
        ~std::uintptr_t{0} - 7,
    };
    if (whole < s->span) {
      bad.push_back(base + whole);           // the partial block at the end
      bad.push_back(base + s->span - 8);
    }
    for (std::uintptr_t b : bad) {
      CAPTURE(b);
      // Only pointers that are not a live block of this heap (a - bs may be a
      // live block of the same class; skip those).
      if (h.usable_size(reinterpret_cast<void*>(b)) != 0) continue;
      refuse(h, b, expect);
    }
    // The block itself is untouched: live, freeable once, then refused.
    REQUIRE(h.usable_size(p) == size);
    h.deallocate(p);
    REQUIRE(refused(h) == expect);
    refuse(h, a, expect);
  }
  REQUIRE(other.usable_size(theirs) == 64);
  h.deallocate(large);
  other.deallocate(theirs);
  REQUIRE(refused(h) == expect);
  REQUIRE(refused(other) == 0);
  // Nothing got into a bin twice: a round of allocations per class is distinct.
  dropalloc::testing::require_distinct_blocks(h, 0, dropalloc::core::kNumSmallClasses, 300, 8);
  REQUIRE(refused(h) == expect);
}
