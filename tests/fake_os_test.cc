// The core against a fake OS: failures of every mapping call become
// std::bad_alloc, leak nothing, and the resource keeps working.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"

using dropalloc::droppable_resource;
using dropalloc::resource_options;
using dropalloc::os::fake_os;

TEST_CASE("an arena mapping failure is a bad_alloc naming the reason, then work resumes") {
  fake_os os;
  {
    resource_options opts;
    opts.os = &os;
    droppable_resource res(opts);
    os.fail_arena_call = 1;
    try {
      (void)res.allocate(64, 8);
      FAIL("no exception");
    } catch (const dropalloc::allocation_error& e) {
      CHECK(std::strstr(e.what(), "refused to map") != nullptr);
    }
    void* p = res.allocate(64, 8);  // the second call maps fine
    CHECK(p != nullptr);
    CHECK(os.arena_maps == 2);
    os.fail_arena_call = os.arena_maps + 1;
    CHECK_THROWS_AS((void)res.allocate(1 << 20, 8), std::bad_alloc);  // large block
    void* q = res.allocate(1 << 20, 8);
    CHECK(q != nullptr);
    res.deallocate(p, 64, 8);
    res.deallocate(q, 1 << 20, 8);
  }
  CHECK(os.arena_maps - 2 == os.arena_unmaps);  // every successful map was undone
  CHECK(os.arena_bytes_mapped == 0);
}

TEST_CASE("a metadata mapping failure leaves no arena behind") {
  fake_os os;
  {
    resource_options opts;
    opts.os = &os;
    opts.thread_cache = false;
    droppable_resource res(opts);
    // Metadata calls: the first one maps the global segment map (once per
    // process, maybe already done), so fail the next one whatever it is.
    os.fail_metadata_call = os.metadata_maps + 1;
    bool threw = false;
    try {
      (void)res.allocate(64, 8);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    if (threw) CHECK(os.arena_maps == os.arena_unmaps + 0);
    void* p = res.allocate(64, 8);
    res.deallocate(p, 64, 8);
  }
  CHECK(os.arena_bytes_mapped == 0);
}

TEST_CASE("every nth mapping failing: no leak, no corruption") {
  fake_os os;
  {
    resource_options opts;
    opts.os = &os;
    opts.empty_arena_decay_ms = 0;
    droppable_resource res(opts);
    std::vector<std::pair<unsigned char*, std::size_t>> live;
    int failures = 0;
    for (int i = 0; i < 3000; ++i) {
      if (i % 97 == 0) os.fail_arena_call = os.arena_maps + 1;
      std::size_t size = static_cast<std::size_t>(i % 5 == 0 ? 300000 : 16 + (i * 37) % 30000);
      try {
        auto* p = static_cast<unsigned char*>(res.allocate(size, 16));
        std::memset(p, i & 0xff, size);
        live.emplace_back(p, size);
      } catch (const std::bad_alloc&) {
        ++failures;
      }
      if (live.size() > 200) {
        auto [p, n] = live.front();
        for (std::size_t k = 0; k < n; k += 512) REQUIRE(p[k] == p[0]);
        res.deallocate(p, n, 16);
        live.erase(live.begin());
      }
    }
    CHECK(failures > 0);
    for (auto [p, n] : live) res.deallocate(p, n, 16);
    CHECK(res.stats().blocks_live == 0);
  }
  CHECK(os.arena_bytes_mapped == 0);
}

TEST_CASE("seal goes through the OS layer; drops through the test hook") {
  fake_os os;
  resource_options opts;
  opts.os = &os;
  droppable_resource res(opts);
  auto b = res.allocate_block(20000);
  std::memset(b.ptr, 5, 20000);
  CHECK(res.seal(b.ptr) == dropalloc::block_state::intact);
  CHECK(os.seals == 1);
  res.drop_for_testing(b.ptr, 1);
  CHECK(os.drops == 1);
  CHECK(res.check(b.ptr, b.generation) == dropalloc::block_state::dropped);
  res.deallocate(b.ptr, 20000);
}

TEST_CASE("a handle into an unmapped arena whose addresses another arena reuses reads stale") {
  fake_os os;
  os.reuse_unmapped_arena = true;
  resource_options o;
  o.os = &os;
  o.empty_arena_decay_ms = 0;
  droppable_resource res(o);
  void* first = res.allocate(64, 8);
  auto b = res.allocate_block(64, 8);  // 64 bytes into the arena
  std::memset(b.ptr, 0x5a, 64);
  res.seal(b.ptr);
  REQUIRE(res.check(b.ptr, b.generation) == dropalloc::block_state::intact);
  res.deallocate(first, 64, 8);
  res.deallocate(b.ptr, 64, 8);
  res.trim();  // the arena is unmapped
  REQUIRE(os.last_unmapped != nullptr);
  void* other = res.allocate(48, 8);  // a 48-byte class arena, at the same addresses
  REQUIRE(os.last_unmapped == nullptr);
  CHECK(res.owns(b.ptr) == false);  // offset 64 is no block start of a 48-byte class
  CHECK(res.check(b.ptr, b.generation) == dropalloc::block_state::stale);
  res.deallocate(other, 48, 8);
}
