// A core heap over a chosen OS layer, and its large blocks, for tests that
// drive allocator/core directly (tests/large_grow_test, tests/attack22).
#pragma once

#include <doctest/doctest.h>

#include <cstddef>

#include "allocator/core/heap.h"
#include "allocator/os/os.h"

namespace dropalloc::testing {

inline core::heap_options with_os(os::os_interface* o) {
  core::heap_options opt;
  opt.os = o;
  return opt;
}

// A block of `bytes` from h, which the test requires to succeed.
inline void* allocate_large(core::heap& h, std::size_t bytes, std::size_t alignment = 16) {
  core::alloc_error err = core::alloc_error::none;
  void* p = h.allocate(bytes, alignment, &err);
  REQUIRE(p != nullptr);
  return p;
}

}  // namespace dropalloc::testing
