// Without the background thread (resource_options::background_decay = false,
// DROPALLOC_DECAY_THREAD=0, or when the thread cannot be created) the pages
// of free blocks are never released by later frees, against README ("Memory
// goes back on a clock": "then decay happens on later frees and on trim()")
// and purger.h ("If the thread cannot be created the heaps still decay on
// their next operation, as without it").
//
// Only trim() and the purger call heap::decay() (core/decay.cc), the one
// place that calls purge_free_pages(); a free reaches at most
// drain_transfer() and release_empty() (core/heap.cc, give_back), which
// unmap empty arenas but release no page of an arena that still holds a
// block. A program that keeps one block per arena live keeps every freed page
// resident for good.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"

using dropalloc::droppable_resource;

TEST_CASE("without the background thread, later frees release the pages of long-free blocks") {
  dropalloc::os::fake_os os;
  dropalloc::resource_options o;
  o.os = &os;
  o.thread_cache = false;  // every free goes to its arena: the "later operation"
  o.background_decay = false;
  o.empty_arena_decay_ms = 5;
  droppable_resource res(o);
  std::vector<void*> ps;
  for (int i = 0; i < 4096; ++i) {  // 1 MiB of 256-byte blocks
    ps.push_back(res.allocate(256, 8));
    std::memset(ps.back(), 0x5a, 256);
  }
  // One block in 64 stays live: every arena stays in use, most pages hold
  // only free blocks.
  std::vector<void*> kept;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    if (i % 64 == 0) kept.push_back(ps[i]); else res.deallocate(ps[i], 256, 8);
  }
  // Many decay times later the program goes on allocating and freeing.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int round = 0; round < 100; ++round) {
    void* q = res.allocate(256, 8);
    res.deallocate(q, 256, 8);
  }
  MESSAGE("pages released by frees: " << os.released_bytes.load() / 4096);
  CHECK(os.released_bytes.load() > 0);
  std::size_t trimmed = res.trim();
  MESSAGE("trim() then handed back " << trimmed / 1024 << " KiB");
  for (void* p : kept) res.deallocate(p, 256, 8);
}
