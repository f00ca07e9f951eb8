// Retired arenas unmapped in batches (core/segment.h, retire::batched): the
// mappings the large cache evicts, and the headers that growths in place
// replace, wait unregistered and are unmapped together after one grace
// period once kRetiredBatchSegments or kRetiredBatchBytes of them wait, or
// at the next decay pass, trim() or heap destruction; nothing is unmapped
// early, nothing is left mapped, and a batch never holds more than its bound.
// A batch may hold other heaps' segments: a heap's destructor and trim()
// wait for the thread unmapping it.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::free_growing;
using dropalloc::testing::holds;
using dropalloc::testing::stalling_os;
using dropalloc::testing::with_os_no_decay;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kLarge = 300 * 1024;  // above the largest class: a mapping of its own
constexpr int kCacheSlots = 16;             // heap::kLargeCacheSlots

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
  // Cached strictly before the others, by the heap's coarse clock (a tick
  // of up to 10 ms): the eviction takes the oldest.
  std::this_thread::sleep_for(std::chrono::milliseconds(25));
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

namespace {

// Heap b's thread: fills b's cache, then evicts until the batch is full, so
// that it takes every waiting segment (`waiting` of another heap's among
// them) and stalls in its first unmap, one of b's own (pushed last).
std::thread stalled_flusher(core::heap& b, stalling_os& os_b, int waiting) {
  std::thread t([&b, &os_b, waiting] {
    const std::size_t next = free_growing(b, 8 * kLarge, kCacheSlots);
    os_b.stall.store(true);
    free_growing(b, next, static_cast<int>(core::kRetiredBatchSegments) - waiting);
  });
  while (!os_b.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return t;
}

}  // namespace

TEST_CASE("a heap destroyed while another thread unmaps its retired mapping waits for that unmap") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  core::heap b(with_os_no_decay(&os_b));
  os::fake_os os_a;
  auto* a = new core::heap(with_os_no_decay(&os_a));
  core::unmap_deferred_segments();
  free_growing(*a, kLarge, kCacheSlots + 1);  // one of a's mappings waits
  std::thread flusher = stalled_flusher(b, os_b, 1);

  std::atomic<bool> destroyed{false};
  std::thread destroyer([&] {
    delete a;  // must not return while the flusher still holds a's mapping
    destroyed.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK_FALSE(destroyed.load());
  os_b.release.store(true);
  destroyer.join();
  // Every arena of a's went before its destructor returned: its OS layer,
  // which the program may destroy now, is never called again.
  CHECK(os_a.arena_maps.load() == os_a.arena_unmaps.load());
  flusher.join();
  b.trim();
}

TEST_CASE("trim() waits for this heap's retired mappings that another thread is unmapping") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  core::heap b(with_os_no_decay(&os_b));
  os::fake_os os_a;
  core::heap a(with_os_no_decay(&os_a));
  core::unmap_deferred_segments();
  free_growing(a, kLarge, kCacheSlots + 3);  // three of a's wait
  std::thread flusher = stalled_flusher(b, os_b, 3);
  std::thread trimmer([&] { a.trim(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  os_b.release.store(true);
  trimmer.join();
  CHECK(os_a.arena_maps.load() == os_a.arena_unmaps.load());  // nothing live, nothing cached, none waiting
  flusher.join();
  b.trim();
}
