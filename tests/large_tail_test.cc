// A cached large mapping reused for a smaller request: in ordinary memory
// (the malloc shim's heap) the pages past the request stay as they are while
// the tails kept so add up to at most heap::kLargeTailKeptMaxBytes, and are
// released past that; a freed or regrown block gives its share back. In
// droppable memory every tail is released (tests/decay_test.cc).
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::holds;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kMapping = 12 * kMiB;  // each reuse for kRequest leaves an 8 MiB tail
constexpr std::size_t kRequest = 4 * kMiB;
constexpr std::size_t kTail = kMapping - kRequest;
static_assert(2 * kTail == core::kLargeTailKeptMaxBytes, "two tails fill the bound, a third passes it");

// A core heap over a fake OS reporting `memory`, with `n` mappings of
// kMapping written and freed: in its large cache, with their pages (a live
// block of kBallast, never written, keeps the cache's resident bound above
// them: core::kLargeCacheResidentFloorBytes). Its one live block at the end
// of a test is that one.
struct heap_with_cached_mappings {
  static constexpr std::size_t kBallast = 8 * kMapping;
  dropalloc::os::fake_os os;
  core::heap h;
  void* ballast;
  heap_with_cached_mappings(dropalloc::backing memory, int n) : h(dropalloc::testing::with_fake_os(&os, memory)) {
    ballast = allocate_large(h, kBallast);
    void* p[4] = {};
    for (int i = 0; i < n; ++i) {
      p[i] = allocate_large(h, kMapping);
      fill(p[i], kMapping, static_cast<std::size_t>(i) + 1);
    }
    for (int i = 0; i < n; ++i) h.deallocate(p[i]);
  }
  ~heap_with_cached_mappings() { h.deallocate(ballast); }
};

}  // namespace

TEST_CASE("ordinary memory: reused mappings keep their tails up to the bound, then release them") {
  heap_with_cached_mappings t(dropalloc::backing::ordinary, 3);
  auto& os = t.os;
  auto& h = t.h;
  const std::uint64_t maps = os.arena_maps.load();
  const std::uint64_t before = os.released_bytes.load();

  void* a = allocate_large(h, kRequest);
  void* b = allocate_large(h, kRequest);
  CHECK(os.arena_maps.load() == maps);  // both reused a cached mapping
  CHECK(os.released_bytes.load() == before);  // and kept its tail: 2 tails, at the bound
  CHECK(h.usable_size(a) == kMapping);  // the whole mapping is the caller's, as before
  void* c = allocate_large(h, kRequest);
  CHECK(os.arena_maps.load() == maps);
  CHECK(os.released_bytes.load() - before == kTail);  // past the bound: released

  for (void* p : {a, b, c}) fill(p, kMapping, 7);
  for (void* p : {a, b, c}) CHECK(holds(p, kMapping, 7));
  // A freed block gives its tail's share back: the next reuse keeps its tail.
  h.deallocate(a);
  const std::uint64_t after_free = os.released_bytes.load();
  void* d = allocate_large(h, kRequest);
  CHECK(d == a);
  CHECK(os.released_bytes.load() == after_free);
  for (void* p : {b, c, d}) h.deallocate(p);
  CHECK(h.stats().blocks_live == 1);  // the ballast
}

TEST_CASE("ordinary memory: a block that grows in place gives its kept tail's share back") {
  heap_with_cached_mappings t(dropalloc::backing::ordinary, 3);
  auto& os = t.os;
  auto& h = t.h;
  void* a = allocate_large(h, kRequest);
  void* b = allocate_large(h, kRequest);  // the bound is full
  fill(a, kRequest, 3);
  bool grown = h.grow_large_in_place(a, kMapping + kMiB);  // the address space after it may be taken
  if (grown) {
    CHECK(holds(a, kRequest, 3));
    const std::uint64_t before = os.released_bytes.load();
    void* c = allocate_large(h, kRequest);
    CHECK(os.released_bytes.load() == before);  // a's share went back at the growth
    h.deallocate(c);
  } else {
    MESSAGE("the block could not grow in place here: the growth case was not exercised");
  }
  h.deallocate(a);
  h.deallocate(b);
  CHECK(h.stats().blocks_live == 1);  // the ballast
}

TEST_CASE("private fallback memory: every reused mapping releases its tail") {
  heap_with_cached_mappings t(dropalloc::backing::private_fallback, 1);
  auto& os = t.os;
  auto& h = t.h;
  const std::uint64_t before = os.released_bytes.load();
  void* a = allocate_large(h, kRequest);
  CHECK(os.released_bytes.load() - before == kTail);
  h.deallocate(a);
}
