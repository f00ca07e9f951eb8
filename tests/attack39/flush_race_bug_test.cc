// FINDING (fixed: heap::wait_for_retired): unmap_deferred_segments() (called by ~heap, and by trim()/decay)
// returns at once when the stack is empty, even while another thread has
// just taken the whole stack (unmap_deferred_now: exchange, then grace
// period, then unmaps) and has not yet unmapped it. With retire::batched any
// thread whose free evicts a cached large mapping becomes such a flusher, for
// every heap's waiting segments. So:
//   - a heap's destructor returns with segments it mapped still mapped, and
//     the flusher later calls unmap_arena/unmap_metadata on that heap's OS
//     layer, which the program may already have destroyed (segment.h: "A
//     heap's destructor calls it: the OS they were mapped with may not
//     outlive the heap");
//   - trim() returns with this heap's evicted mappings still mapped.
#include "tests/attack39/common.h"

using namespace attack39;

TEST_CASE("heap destroyed while another thread's flush holds its evicted mapping") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  core::heap hb(dropalloc::testing::with_os_no_decay(&os_b));

  os::fake_os real_a;
  tomb_os os_a(real_a);
  auto* ha = new core::heap(dropalloc::testing::with_os_no_decay(&os_a));

  core::unmap_deferred_segments();
  // Heap A: 16 slots full, then one eviction: one of A's arenas waits.
  free_growing(*ha, kLarge, kCacheSlots + 1);
  REQUIRE(real_a.arena_unmaps.load() == 0);

  // Thread B: its 16 slots, then 15 evictions: the 16th waiting segment
  // fills the batch and B takes the whole stack, A's arena included. Its
  // first unmap stalls (B's own arenas are on top of the stack).
  std::thread b([&] {
    std::size_t next = free_growing(hb, 8 * kLarge, kCacheSlots);
    os_b.stall.store(true);
    free_growing(hb, next, static_cast<int>(core::kRetiredBatchSegments) - 1);
  });
  while (!os_b.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  // ~heap must wait for the flush that holds A's arena (it used to return at
  // once, the stack being empty): on a thread of its own, B released after.
  std::atomic<bool> destroyed{false};
  std::thread d([&] {
    delete ha;
    const int a_left = real_a.arena_maps.load() - real_a.arena_unmaps.load();
    CHECK_MESSAGE(a_left == 0, "heap A destroyed with ", a_left, " of its arenas still mapped");
    os_a.dead.store(true);  // the program may destroy A's OS layer now
    destroyed.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK_FALSE(destroyed.load());
  os_b.release.store(true);
  d.join();
  b.join();
  CHECK_MESSAGE(os_a.calls_after_death.load() == 0, "calls into heap A's OS layer after ~heap: ",
                os_a.calls_after_death.load());
  hb.trim();
}

TEST_CASE("trim() returns while another thread's flush still holds this heap's evicted mappings") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  core::heap hb(dropalloc::testing::with_os_no_decay(&os_b));
  os::fake_os real_a;
  core::heap ha(dropalloc::testing::with_os_no_decay(&real_a));

  core::unmap_deferred_segments();
  free_growing(ha, kLarge, kCacheSlots + 3);  // three of A's wait
  std::thread b([&] {
    std::size_t next = free_growing(hb, 8 * kLarge, kCacheSlots);
    os_b.stall.store(true);
    free_growing(hb, next, static_cast<int>(core::kRetiredBatchSegments) - 3);
  });
  while (!os_b.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // trim() waits (up to about 100 ms) for the flush holding A's arenas: B is
  // released while it waits.
  std::thread t([&] {
    ha.trim();  // "trim() and decay really unmap everything deferred"
    const int a_left = real_a.arena_maps.load() - real_a.arena_unmaps.load();
    CHECK_MESSAGE(a_left == 0, "after trim() with nothing live, ", a_left, " of A's arenas still mapped");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  os_b.release.store(true);
  t.join();
  b.join();
  hb.trim();
}
