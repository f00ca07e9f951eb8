// A core heap over a chosen OS layer, and its large blocks, for tests that
// drive allocator/core directly (tests/large_grow_test, tests/attack22).
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <set>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/os.h"

namespace dropalloc::testing {

inline core::heap_options with_os(os::os_interface* o) {
  core::heap_options opt;
  opt.os = o;
  return opt;
}

// As with_os, for a heap whose large cache and empty arenas keep what they
// hold for the length of a test: nothing leaves them on a clock.
// `purger`: the heap asks for the background purger thread (background_decay),
// whose passes then come only after the test; a heap that has one leaves a
// freed large mapping past the cache's resident bound due (its pages go at
// the next decay pass or new large mapping), one without releases it at once.
inline core::heap_options with_os_no_decay(os::os_interface* o, bool purger = false) {
  core::heap_options opt = with_os(o);
  opt.empty_arena_decay_ms = 600000;
  opt.background_decay = purger;
  return opt;
}

// with_os_no_decay over a fake OS layer (os/fake_os.h) that reports
// `memory`, set before the heap is built (which may ask).
template <class FakeOs>
core::heap_options with_fake_os(FakeOs* os, backing memory, bool purger = false) {
  os->reported_backing = memory;
  return with_os_no_decay(os, purger);
}

// A block of `bytes` from h, which the test requires to succeed.
inline void* allocate_large(core::heap& h, std::size_t bytes, std::size_t alignment = 16) {
  core::alloc_error err = core::alloc_error::none;
  void* p = h.allocate(bytes, alignment, &err);
  REQUIRE(p != nullptr);
  return p;
}

// Allocates and frees `count` large blocks, each a page larger than the one
// before, starting at `from` bytes (64 bytes of each written), so that none
// reuses a cached mapping: once the large cache's slots are full, each free
// evicts one. Returns the size the next call starts from.
inline std::size_t free_growing(core::heap& h, std::size_t from, int count) {
  for (int i = 0; i < count; ++i, from += 4096) {
    void* p = allocate_large(h, from);
    std::memset(p, i, 64);
    h.deallocate(p);
  }
  return from;
}

// For every class in [first, last): `count` blocks from h, all distinct (no
// block got into a bin twice), then freed.
inline void require_distinct_blocks(core::heap& h, std::size_t first, std::size_t last, int count,
                                    std::size_t alignment) {
  for (std::size_t cls = first; cls < last; ++cls) {
    const std::size_t size = core::kSizeClasses[cls].size;
    std::set<void*> seen;
    std::vector<void*> got;
    for (int i = 0; i < count; ++i) {
      core::alloc_error err = core::alloc_error::none;
      void* q = h.allocate(size, alignment, &err);
      REQUIRE(q != nullptr);
      REQUIRE(seen.insert(q).second);
      got.push_back(q);
    }
    for (void* q : got) h.deallocate(q);
  }
}

}  // namespace dropalloc::testing
