// Retired arenas unmapped in batches (core/segment.h, retire::batched): the
// mappings the large cache evicts, and the headers that growths in place
// replace, wait unregistered and are unmapped together after one grace
// period once kRetiredBatchSegments or kRetiredBatchBytes of them wait, or
// at the next decay pass, trim() or heap destruction; nothing is unmapped
// early, nothing is left mapped, and a batch never holds more than its bound.
#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <thread>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::holds;
using dropalloc::testing::with_os_no_decay;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kLarge = 300 * 1024;  // above the largest class: a mapping of its own
constexpr int kCacheSlots = 16;             // heap::kLargeCacheSlots

// Allocates and frees large blocks, each a page larger than the one before,
// so that none reuses a cached mapping: once the cache's slots are full, each
// free evicts one. Returns the size the next call should start from.
std::size_t free_growing(core::heap& h, std::size_t from, int count) {
  for (int i = 0; i < count; ++i, from += kPage) {
    void* p = allocate_large(h, from);
    fill(p, 64, static_cast<std::size_t>(i));
    h.deallocate(p);
  }
  return from;
}

}  // namespace

TEST_CASE("mappings the large cache evicts are unmapped in batches, none early, none left") {
  os::fake_os fos;
  {
    core::heap h(with_os_no_decay(&fos));
    core::unmap_deferred_segments();  // whatever an earlier test left waiting
    std::size_t next = free_growing(h, kLarge, kCacheSlots);  // fills the slots, evicts nothing
    const int before = fos.arena_unmaps.load();
    for (std::size_t k = 1; k < core::kRetiredBatchSegments; ++k) {
      next = free_growing(h, next, 1);  // one eviction each
      CHECK(fos.arena_unmaps.load() == before);  // waiting for the batch
    }
    next = free_growing(h, next, 1);  // the batch is full: all of it goes
    CHECK(fos.arena_unmaps.load() == before + static_cast<int>(core::kRetiredBatchSegments));

    // A partial batch goes at trim() (a decay pass), with the cache itself.
    next = free_growing(h, next, 3);
    CHECK(fos.arena_unmaps.load() == before + static_cast<int>(core::kRetiredBatchSegments));
    h.trim();
    CHECK(fos.arena_unmaps.load() == before + static_cast<int>(core::kRetiredBatchSegments) + 3 + kCacheSlots);
    CHECK(h.stats().blocks_live == 0);
  }
  // Every arena went (the address map's leaves, metadata, stay for good).
  CHECK(fos.arena_maps.load() == fos.arena_unmaps.load());
}

TEST_CASE("a batch never holds kRetiredBatchBytes: a large eviction unmaps it at once") {
  os::fake_os fos;
  core::heap h(with_os_no_decay(&fos));
  core::unmap_deferred_segments();
  // The oldest entry, evicted first: larger than the whole byte bound.
  void* big = allocate_large(h, core::kRetiredBatchBytes);
  h.deallocate(big);
  std::this_thread::sleep_for(std::chrono::milliseconds(3));  // cached strictly before the others
  std::size_t next = free_growing(h, kLarge, kCacheSlots - 1);  // the slots full
  const int before = fos.arena_unmaps.load();
  next = free_growing(h, next, 1);  // evicts the big one: over the bound
  CHECK(fos.arena_unmaps.load() == before + 1);
  next = free_growing(h, next, 1);  // a small one waits again
  CHECK(fos.arena_unmaps.load() == before + 1);
  h.trim();
  CHECK(fos.arena_unmaps.load() == before + 2 + kCacheSlots);
}

TEST_CASE("the header a growth in place replaced is unmapped with a batch, the block untouched") {
  os::fake_os fos;
  core::heap h(with_os_no_decay(&fos));
  core::unmap_deferred_segments();
  void* p = nullptr;
  for (int i = 0; i < 8 && p == nullptr; ++i) {
    void* q = allocate_large(h, kLarge);
    fill(q, kLarge, 11);
    if (h.grow_large_in_place(q, 2 * kLarge)) p = q;
    else h.deallocate(q);  // the address space after it was taken: another try
  }
  REQUIRE(p != nullptr);
  const int meta_unmaps = fos.metadata_unmaps.load(), arena_unmaps = fos.arena_unmaps.load();
  core::unmap_deferred_segments();  // the old header's batch, cut short
  CHECK(fos.metadata_unmaps.load() == meta_unmaps + 1);
  CHECK(fos.arena_unmaps.load() == arena_unmaps);  // not the block's mapping
  CHECK(holds(p, kLarge, 11));
  const std::uint64_t gen = h.generation(p);
  CHECK(h.seal(p) == block_state::intact);
  CHECK(h.check(p, gen) == block_state::intact);
  h.deallocate(p);
  CHECK(h.stats().misuse_refused == 0);
}
