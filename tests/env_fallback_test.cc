// DROPALLOC_FORCE_FALLBACK=1 (set by the BUILD rule) forces private memory for
// every resource, and DROPALLOC_VERBOSE=1 reports it once.
#include <doctest/doctest.h>

#include <cstring>

#include "allocator/dropalloc.h"

TEST_CASE("the environment variable forces the fallback") {
  dropalloc::droppable_resource res;
  CHECK(res.arena_backing() == dropalloc::backing::private_fallback);
  CHECK(dropalloc::os::system_os().fallback_reason() == -1);
  std::pmr::vector<int> v(&res);
  for (int i = 0; i < 100000; ++i) v.push_back(i);
  CHECK(v[99999] == 99999);
  auto b = res.allocate_block(64);
  std::memset(b.ptr, 1, 64);
  CHECK(res.seal(b.ptr) == dropalloc::block_state::intact);
  res.deallocate(b.ptr, 64);
}
