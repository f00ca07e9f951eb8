// As flush_race_bug_test's first case, but the program then really destroys
// heap A's OS layer (a fake_os on the heap) after ~heap returned. The
// flusher's unmap_all later calls through the freed object:
// under --config=asan_ubsan a heap-use-after-free in unmap_all. Fixed:
// ~heap waits for its segments another thread's flush holds
// (heap::wait_for_retired).
#include <new>

#include "tests/attack39/common.h"

using namespace attack39;

TEST_CASE("the OS layer of a destroyed heap is called by another thread's flush") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  core::heap hb(dropalloc::testing::with_os_no_decay(&os_b));

  void* storage = ::operator new(sizeof(os::fake_os));
  auto* os_a = new (storage) os::fake_os;
  auto* ha = new core::heap(dropalloc::testing::with_os_no_decay(os_a));
  core::unmap_deferred_segments();
  free_growing(*ha, kLarge, kCacheSlots + 1);

  std::thread b([&] {
    std::size_t next = free_growing(hb, 8 * kLarge, kCacheSlots);
    os_b.stall.store(true);
    free_growing(hb, next, static_cast<int>(core::kRetiredBatchSegments) - 1);
  });
  while (!os_b.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // ~heap now waits for B's flush (heap::wait_for_retired): on a thread of
  // its own, B released meanwhile; A's OS layer destroyed once it returned.
  std::thread d([&] { delete ha; });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  os_b.release.store(true);
  d.join();
  os_a->~fake_os();  // the program destroys A's OS layer: the heap using it is gone
#if defined(__SANITIZE_ADDRESS__)
  ::operator delete(storage);  // ASan reports the flusher's use of it
#else
  // Unsanitized: keep the storage but clear its vtable pointer, so that a
  // late call crashes (SIGSEGV in unmap_all) instead of passing quietly.
  *static_cast<void**>(storage) = nullptr;
#endif
  b.join();
  hb.trim();
}
