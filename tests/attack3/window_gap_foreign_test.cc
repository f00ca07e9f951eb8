// An arena smaller than its 4 MiB map window leaves the rest of the window to
// anyone else's mappings. Pointers into such a mapping are foreign to every
// query and to free: nothing is touched, nothing crashes, and a generation
// handle of a block of an arena since unmapped reads stale, not intact.
#include <doctest/doctest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>

#include "allocator/dropalloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

TEST_CASE("a mapping in the unused part of an arena's window is foreign to every call") {
  dropalloc::resource_options o;
  o.background_decay = false;
  droppable_resource res(o);
  dropalloc::block_ref b = res.allocate_block(48);  // the class's first arena: 64 KiB
  std::memset(b.ptr, 0x11, 48);
  const auto window = reinterpret_cast<std::uintptr_t>(b.ptr) & ~((std::uintptr_t{1} << 22) - 1);
  // A page of someone else's, past the arena, at a block boundary of the class.
  auto* other = static_cast<unsigned char*>(mmap(reinterpret_cast<void*>(window + (1u << 20)), 4096,
                                                 PROT_READ | PROT_WRITE,
                                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0));
  if (other == MAP_FAILED || reinterpret_cast<std::uintptr_t>(other) != window + (1u << 20)) {
    MESSAGE("could not map inside the window; nothing to test");
    res.deallocate(b.ptr, 48);
    return;
  }
  std::memset(other, 0x77, 4096);
  for (std::size_t off : {std::size_t{0}, std::size_t{48}, std::size_t{4096 - 64}}) {
    void* p = other + off;
    CHECK_FALSE(res.owns(p));
    CHECK(res.usable_size(p) == 0);
    CHECK(res.check(p, 0) == block_state::foreign);
    CHECK(res.seal(p) == block_state::foreign);
    CHECK(res.drop_for_testing(p, 64) != 0);
    res.deallocate(p, 48);  // refused and reported
  }
  for (int i = 0; i < 4096; ++i) REQUIRE(other[i] == 0x77);
  CHECK(res.stats().misuse_refused == 3);
  CHECK(res.check(b.ptr, b.generation) == block_state::unsealed);
  munmap(other, 4096);
  res.deallocate(b.ptr, 48);
  res.trim();  // the arena goes: the old handle is stale
  CHECK(res.check(b.ptr, b.generation) == block_state::stale);
}
