// The exact probe of the large cache's two private counts, after
// tests/attack25/cache_accounting_test.cc, for the deferred release (a due
// mapping is released by the next decay pass, not by its free).
#pragma once

#include <doctest/doctest.h>

#include <cstring>

#include "allocator/core/heap.h"
#include "tests/attack26/hook_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace dropalloc::testing {

// The exact probe of tests/attack25/cache_accounting_test.cc, for the deferred
// release: with nothing live and the cache emptied, a 40 MiB ballast (never
// cached), x (260 KiB) and big (20 MiB). Freeing big keeps its pages (bound
// 20 MiB + 130 KiB); freeing x makes it due: nothing released until the next
// decay pass, which releases exactly x. calloc then takes x back zeroed and
// big with its pages. Afterwards only the heap's own mappings are left: none.
inline void probe(dropalloc::core::heap& h, hook_os& o, const char* when) {
  INFO(when);
  REQUIRE(h.stats().blocks_live == 0);
  h.trim();
  CHECK(o.maps.load() == 0);  // nothing leaked (nor out of its slot for good)
  CHECK(h.stats().bytes_mapped == 0);
  void* ballast = allocate_large(h, 40 * (std::size_t{1} << 20));
  void* x = allocate_large(h, 260 * std::size_t{1024});
  void* big = allocate_large(h, 20 * (std::size_t{1} << 20));
  fill(x, 260 * std::size_t{1024}, 11);
  std::memset(big, 0x5a, 20 * (std::size_t{1} << 20));
  const std::uint64_t r0 = o.released_bytes.load();
  h.deallocate(big);
  CHECK(o.released_bytes.load() - r0 == 0);
  h.deallocate(x);
  CHECK(o.released_bytes.load() - r0 == 0);
  h.decay(false);
  CHECK(o.released_bytes.load() - r0 == 260 * std::size_t{1024});
  h.decay(false);  // nothing due any more
  CHECK(o.released_bytes.load() - r0 == 260 * std::size_t{1024});
  dropalloc::core::alloc_error err = dropalloc::core::alloc_error::none;
  void* z = h.allocate_zeroed(260 * std::size_t{1024}, 16, &err);
  REQUIRE(z != nullptr);
  CHECK(z == x);
  CHECK(all_zero(z, 260 * std::size_t{1024}));
  void* b2 = allocate_large(h, 20 * (std::size_t{1} << 20));
  CHECK(b2 == big);
  if (b2 == big) {
    const auto* c = static_cast<const unsigned char*>(b2);
    CHECK(c[0] == 0x5a);
    CHECK(c[20 * (std::size_t{1} << 20) - 1] == 0x5a);
  }
  h.deallocate(z);
  h.deallocate(b2);
  h.deallocate(ballast);
  h.trim();
  CHECK(o.maps.load() == 0);
}


}  // namespace dropalloc::testing
