// Control: an arena the large cache evicted, unmapped with its batch, whose
// address a new block then takes (the fake OS maps there): the old sealed
// handle reads stale, never intact, and the new block's generations are
// all above it; a header a growth retired, unmapped with a batch, leaves
// the grown block intact and checkable.
#include "tests/attack39/common.h"

using namespace attack39;
using dropalloc::block_state;

TEST_CASE("address reuse after a batched unmap: old handles stay stale") {
  os::fake_os fos;
  core::heap h(dropalloc::testing::with_os_no_decay(&fos));
  core::unmap_deferred_segments();
  constexpr std::size_t kBig = 300 * 1024;  // the others over 4x: none reused for it, nor it for them
  void* p = dropalloc::testing::allocate_large(h, kBig);
  dropalloc::testing::fill(p, kBig, 7);
  std::uint64_t g = 0;
  REQUIRE(h.seal(p, &g) == block_state::intact);
  h.deallocate(p);  // cached, the oldest
  // Strictly older than the others by the heap's coarse clock (a tick of up
  // to 10 ms; 3 ms here left a tie now and then, and another was evicted).
  std::this_thread::sleep_for(std::chrono::milliseconds(25));
  std::size_t next = free_growing(h, 1300 * 1024, kCacheSlots - 1);  // slots full
  free_growing(h, next, 1);  // evicts p: it waits
  CHECK(h.check(p, g) != block_state::intact);
  fos.reuse_unmapped_arena = true;
  core::unmap_deferred_segments();  // p's batch: p is the last unmapped
  REQUIRE(fos.last_unmapped == p);
  void* q = dropalloc::testing::allocate_large(h, kBig);
  REQUIRE(q == p);  // the same address, a new arena
  fos.reuse_unmapped_arena = false;
  dropalloc::testing::fill(q, kBig, 7);  // the same contents, even
  std::uint64_t g2 = 0;
  REQUIRE(h.seal(q, &g2) == block_state::intact);
  CHECK(g2 > g);
  CHECK(h.check(p, g) == block_state::stale);
  CHECK(h.check(q, g2) == block_state::intact);
  h.deallocate(q);
  h.trim();
  CHECK(fos.arena_maps.load() == fos.arena_unmaps.load());
}
