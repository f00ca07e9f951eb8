// Every query and every transition, asked about pointers that are not block
// starts of the resource: nullptr, stack and heap memory, interior pointers,
// pointers into another resource, non-canonical and kernel addresses, freed
// blocks, blocks of a trimmed arena, stale handles. Nothing may crash, and the
// answers must be foreign or stale (never intact).
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

std::vector<void*> odd_pointers(droppable_resource& other) {
  static int on_data;
  int on_stack = 0;
  std::vector<void*> v = {
      nullptr,
      &on_data,
      &on_stack,
      reinterpret_cast<void*>(1),
      reinterpret_cast<void*>(4096),
      reinterpret_cast<void*>(std::uintptr_t{1} << 47),          // first non-canonical
      reinterpret_cast<void*>((std::uintptr_t{1} << 47) - 8),    // last user word
      reinterpret_cast<void*>(~std::uintptr_t{0}),
      reinterpret_cast<void*>(~std::uintptr_t{0} - 4095),
      reinterpret_cast<void*>(std::uintptr_t{0xffff800000000000}),  // kernel half
      reinterpret_cast<void*>(std::uintptr_t{0x0000400000000000} + 64),
  };
  void* theirs = other.allocate(64, 16);
  v.push_back(theirs);  // a live block of another resource
  void* big = other.allocate(1 << 20, 64);
  v.push_back(big);
  return v;
}

}  // namespace

TEST_CASE("queries and transitions on pointers that are not our blocks") {
  droppable_resource res;
  droppable_resource other;
  std::vector<void*> ps = odd_pointers(other);
  // Interior and tail pointers of our own blocks, small, multi-page, large.
  for (std::size_t size : {1ul, 8ul, 64ul, 4096ul, 16384ul, 65536ul, 1ul << 20, (1ul << 22) + 1}) {
    auto* p = static_cast<unsigned char*>(res.allocate(size, 8));
    std::memset(p, 0x5a, size);
    std::size_t usable = res.usable_size(p);
    ps.push_back(p + 1);
    ps.push_back(p + usable / 2);
    ps.push_back(p + usable - 1);
    if (usable >= 8192) ps.push_back(p + 4096);
  }
  for (void* p : ps) {
    for (std::uint64_t g : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{1} << 40,
                            ~std::uint64_t{0}}) {
      block_state s = res.check(p, g);
      CHECK(s != block_state::intact);
      CHECK(s != block_state::dropped);
      CHECK(s != block_state::unsealed);
    }
    CHECK(res.generation(p) == 0);
    CHECK(res.usable_size(p) == 0);
    CHECK_FALSE(res.owns(p));
    block_state sealed = res.seal(p);
    CHECK((sealed == block_state::foreign || sealed == block_state::stale));
    char src[16] = {1};
    block_state w = res.write_and_seal(p, src, sizeof src);
    CHECK((w == block_state::foreign || w == block_state::stale));
    // Foreign frees are refused, never acted on. (std::pmr's deallocate is
    // declared nonnull, so nullptr goes to the resource's own path only.)
    if (p != nullptr) res.deallocate(p, 64, 16);
  }
  CHECK(res.stats().misuse_refused >= ps.size() - 1);
  // The other resource's blocks are still there and still its own.
  CHECK(other.owns(ps[11]));
  CHECK(other.usable_size(ps[12]) >= (1u << 20));
}

TEST_CASE("drop_for_testing refuses foreign, partly foreign and wrapping ranges") {
  droppable_resource res;
  auto* p = static_cast<unsigned char*>(res.allocate(64, 16));
  std::memset(p, 7, 64);
  int on_stack = 1;
  CHECK(res.drop_for_testing(&on_stack, sizeof on_stack) == EINVAL);
  CHECK(res.drop_for_testing(nullptr, 0) == EINVAL);
  CHECK(on_stack == 1);
  // A length that wraps the address space past the arena: must not drop
  // (or zero) anything outside our arenas.
  for (std::size_t n : {~std::size_t{0}, ~std::size_t{0} - 4096, std::size_t{1} << 63,
                        ~reinterpret_cast<std::uintptr_t>(p) + 1}) {
    int rc = res.drop_for_testing(p, n);
    INFO("n = " << n << ", p = " << static_cast<void*>(p) << ", rc = " << rc);
    // Either refused, or (a wrap to an empty range: rc 0) nothing touched.
    CHECK((rc != 0 || p[0] == 7));
  }
  CHECK(on_stack == 1);
  res.deallocate(p, 64, 16);
}

TEST_CASE("double, interior and stale frees: refused, the heap stays sound") {
  droppable_resource res;
  for (std::size_t size : {16ul, 512ul, 4096ul, 8192ul, 65536ul, 1ul << 20}) {
    auto b = res.allocate_block(size, 16);
    std::memset(b.ptr, 1, size);
    REQUIRE(res.seal(b.ptr) == block_state::intact);
    res.deallocate(b.ptr, size, 16);
    auto before = res.stats().misuse_refused;
    res.deallocate(b.ptr, size, 16);  // double free
    CHECK(res.stats().misuse_refused == before + 1);
    CHECK(res.check(b.ptr, b.generation) == block_state::stale);
    // The next two allocations of this size are distinct blocks.
    void* x = res.allocate(size, 16);
    void* y = res.allocate(size, 16);
    CHECK(x != y);
    CHECK(res.check(b.ptr, b.generation) == block_state::stale);
    res.deallocate(x, size, 16);
    res.deallocate(y, size, 16);
  }
}

TEST_CASE("handles into trimmed arenas and destroyed large mappings read stale") {
  droppable_resource res(dropalloc::resource_options{.thread_cache = false, .empty_arena_decay_ms = 0});
  std::vector<dropalloc::block_ref> refs;
  for (std::size_t size : {64ul, 4096ul, 16384ul, 1ul << 20, 100ul << 20}) {
    auto b = res.allocate_block(size, 16);
    std::memset(b.ptr, 3, size < 4096 ? size : 4096);
    REQUIRE(res.seal(b.ptr) != block_state::foreign);
    refs.push_back(b);
  }
  for (auto& b : refs) res.deallocate(b.ptr, 1, 1);
  res.trim();
  for (auto& b : refs) {
    CHECK(res.check(b.ptr, b.generation) == block_state::stale);
    CHECK(res.generation(b.ptr) == 0);
    CHECK(res.usable_size(b.ptr) == 0);
  }
  // A new resource maps arenas, maybe at the same addresses: old handles stay stale.
  droppable_resource again;
  std::vector<void*> fresh;
  for (int i = 0; i < 8; ++i) fresh.push_back(again.allocate(1ul << 20, 16));
  for (auto& b : refs) {
    CHECK(again.check(b.ptr, b.generation) != block_state::intact);
    CHECK(res.check(b.ptr, b.generation) != block_state::intact);
  }
  for (void* p : fresh) again.deallocate(p, 1ul << 20, 16);
}

TEST_CASE("sizes and alignments at the edges") {
  droppable_resource res;
  for (std::size_t align = 1; align <= (1ul << 23); align <<= 1) {
    for (std::size_t size : {0ul, 1ul, align, align + 1, 4095ul, 4097ul}) {
      void* p = nullptr;
      try {
        p = res.allocate(size, align);
      } catch (const std::bad_alloc&) {
        continue;
      }
      CHECK(reinterpret_cast<std::uintptr_t>(p) % align == 0);
      CHECK(res.usable_size(p) >= size);
      auto g = res.generation(p);
      if (size != 0) std::memset(p, 0x3c, size);
      block_state s = res.seal(p);
      CHECK((s == block_state::intact));
      CHECK(res.check(p, g) == block_state::intact);
      res.deallocate(p, size, align);
      CHECK(res.check(p, g) == block_state::stale);
    }
  }
  // Requests beyond what the address space holds fail cleanly.
  volatile std::size_t huge = ~std::size_t{0};
  CHECK_THROWS_AS((void)res.allocate(std::size_t{1} << 47, 8), std::bad_alloc);
  CHECK_THROWS_AS((void)res.allocate(huge, 8), std::bad_alloc);
  CHECK_THROWS_AS((void)res.allocate(8, std::size_t{1} << 47), std::bad_alloc);
  CHECK_THROWS_AS((void)res.allocate(8, 3), std::bad_alloc);
  // write_and_seal too long for the block: throws, writes nothing.
  auto b = res.allocate_block(64, 16);
  std::memset(b.ptr, 9, 64);
  std::string big(res.usable_size(b.ptr) + 1, 'x');
  CHECK_THROWS_AS(res.write_and_seal(b.ptr, big.data(), big.size()), std::length_error);
  CHECK(static_cast<unsigned char*>(b.ptr)[0] == 9);
  res.deallocate(b.ptr, 64, 16);
}
