// Geometry of dense arenas, for every size class and alignment:
//  * allocate(n, align) for align 1..4096 returns a block aligned to `align`
//    that holds n bytes (usable_size >= n), for n at, just below and just
//    above every class size;
//  * every interior pointer of a block, and every pointer into the tail past
//    an arena's last block, is refused as a block start by owns, usable_size,
//    generation, check, seal and free (block_index's division by magic
//    multiplier); the block start itself is accepted;
//  * decay (trim) releasing pages of freed blocks never touches a live
//    neighbour sharing a page, droppable and fallback alike, and a sealed
//    neighbour still reads intact with its bytes.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/core/size_class.h"
#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::core::kSizeClasses;

TEST_CASE("every class and alignment: aligned, large enough") {
  droppable_resource res;
  for (const auto& row : kSizeClasses) {
    for (std::size_t n : {std::size_t{row.size} - 1, std::size_t{row.size}, std::size_t{row.size} + 1}) {
      for (std::size_t align = 1; align <= 4096; align *= 2) {
        CAPTURE(n);
        CAPTURE(align);
        void* p = res.allocate(n, align);
        CHECK(reinterpret_cast<std::uintptr_t>(p) % align == 0);
        CHECK(res.usable_size(p) >= n);
        std::memset(p, 0x5a, n);
        res.deallocate(p, n, align);
      }
    }
  }
}

TEST_CASE("interior and tail pointers are never block starts, in every class") {
  dropalloc::resource_options o;
  o.thread_cache = false;
  o.background_decay = false;
  droppable_resource res(o);
  for (const auto& row : kSizeClasses) {
    const std::size_t size = row.size;
    CAPTURE(size);
    // Fill the class's first arena (64 KiB or 4 blocks) so its tail exists.
    std::vector<block_ref> bs;
    const std::size_t span = std::max<std::size_t>(64 * 1024, (size * 4 + 4095) / 4096 * 4096);
    const std::size_t cap = span / size;
    for (std::size_t i = 0; i < cap; ++i) bs.push_back(res.allocate_block(size, 8));
    auto* base = static_cast<unsigned char*>(bs[0].ptr);
    REQUIRE(static_cast<unsigned char*>(bs[cap - 1].ptr) == base + (cap - 1) * size);
    for (auto& b : bs) std::memset(b.ptr, 0x77, size);
    REQUIRE(res.seal(bs[1]) == block_state::intact);
    const std::uint64_t g = bs[1].generation;
    // Offsets inside block 1 (all of them for small classes, a sample otherwise)
    // and inside the arena's tail.
    std::vector<std::size_t> offs;
    const std::size_t step = size <= 4096 ? 8 : 8 * 61;
    for (std::size_t k = 1; k < size; k += (k < 64 ? 1 : step)) offs.push_back(size + k);
    for (std::size_t k = cap * size; k < span; k += 8) offs.push_back(k);
    int bad = 0;
    for (std::size_t off : offs) {
      unsigned char* q = base + off;
      if (res.owns(q) || res.usable_size(q) != 0 || res.generation(q) != 0 || res.check(q, g) == block_state::intact ||
          res.seal(q) == block_state::intact) {
        if (++bad < 5) MESSAGE("accepted as a block start: offset " << off);
      }
    }
    CHECK(bad == 0);
    CHECK(res.owns(bs[1].ptr));
    CHECK(res.check(bs[1]) == block_state::intact);
    for (auto& b : bs) res.deallocate(b.ptr, size);
  }
}

namespace {
void decay_keeps_neighbours(bool fallback) {
  dropalloc::resource_options o;
  o.force_fallback = fallback;
  o.background_decay = false;
  o.empty_arena_decay_ms = 1;
  droppable_resource res(o);
  std::size_t released = 0;
  for (std::size_t size : {24, 1400, 3000, 4200, 5000, 9000, 20000, 100000}) {
    CAPTURE(size);
    std::vector<block_ref> bs;
    for (int i = 0; i < 64; ++i) {
      bs.push_back(res.allocate_block(size, 8));
      std::memset(bs.back().ptr, 1 + i, size);
    }
    // Free two of every three: pages hold free blocks next to live ones,
    // sealed (i % 3 == 0, i % 6 == 0) or not (i % 6 == 3).
    for (int i = 0; i < 64; ++i) {
      if (i % 6 == 0) REQUIRE(res.seal(bs[i]) == block_state::intact);
      if (i % 3 != 0) res.deallocate(bs[i].ptr, size);
    }
    released += res.trim();
    for (int i = 0; i < 64; i += 3) {
      auto* p = static_cast<unsigned char*>(bs[i].ptr);
      bool same = true;
      for (std::size_t k = 0; k < size && same; ++k) same = p[k] == static_cast<unsigned char>(1 + i);
      CAPTURE(i);
      CHECK(same);
      CHECK(res.check(bs[i]) == (i % 6 == 0 ? block_state::intact : block_state::unsealed));
    }
    for (int i = 0; i < 64; i += 3) res.deallocate(bs[i].ptr, size);
  }
  CHECK(released > 0);  // pages of free blocks were released
}
}  // namespace

TEST_CASE("decay releases no page a live neighbour has bytes on (droppable)") { decay_keeps_neighbours(false); }
TEST_CASE("decay releases no page a live neighbour has bytes on (fallback)") { decay_keeps_neighbours(true); }
