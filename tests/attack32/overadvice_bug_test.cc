// Promise 3: no advice of live, unsealed data beyond what the old code gave.
//
// When an entry's block is no longer sealed at its generation, give_advice
// now advises the ENTRY BLOCK's whole page range if any block starting in
// that range is sealed. For a block straddling two pages, a sealed block
// starting in its first page makes its second page advised too, although
// the only sealed block of that page was freed (here reallocated, written,
// live). The code before 05f5a50 skipped the entry: that page was never
// advised. The tests flush the queue with decay(false) (seal_all() would
// seal the live block and advise it legitimately).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
using dropalloc::block_state;

namespace {
constexpr std::size_t kSize = 3072;  // block 0: page 0; block 1: pages 0-1; block 2: pages 1-2

struct fixture : dropalloc::testing::recorded_heap {
  void* a0 = nullptr;
  void* a1 = nullptr;
  fixture() {
    core::alloc_error err{};
    a0 = h.allocate(kSize, 16, &err);
    a1 = h.allocate(kSize, 16, &err);
    REQUIRE(a0 != nullptr);
    REQUIRE(a1 != nullptr);
    REQUIRE(reinterpret_cast<std::uintptr_t>(a0) % 4096 == 0);  // block 0 of a fresh arena
    REQUIRE(static_cast<char*>(a1) == static_cast<char*>(a0) + kSize);
    std::memset(a0, 1, kSize);
    std::memset(a1, 2, kSize);
  }
  std::uintptr_t page1() const { return reinterpret_cast<std::uintptr_t>(a0) + 4096; }
  // a1 freed and handed out again, written: live and unsealed.
  void reuse_a1() {
    h.deallocate(a1);
    core::alloc_error err{};
    void* again = h.allocate(kSize, 16, &err);
    REQUIRE(again == a1);
    std::memset(a1, 0x77, kSize);
  }
};
}  // namespace

TEST_CASE("entry of a straddling block freed, a neighbour sealed in its first page: its second page is advised") {
  fixture f;
  const std::uint64_t since = f.rec.mark();
  REQUIRE(f.h.seal(f.a1) == block_state::intact);  // entry: pages 0-1
  std::uint64_t g0 = 0;
  REQUIRE(f.h.seal(f.a0, &g0) == block_state::intact);  // page 0 within pages 0-1: no entry
  f.reuse_a1();
  f.h.decay(false);  // gives the queue
  INFO("advised since: " << f.rec.bytes_since(since) << " bytes");
  CHECK(f.rec.advised(reinterpret_cast<std::uintptr_t>(f.a0), since));  // a0 sealed: page 0, right
  // Page 1 holds a1 (live, written) and block 2 (never handed out): no sealed block.
  CHECK_FALSE(f.rec.advised(f.page1(), since));
  CHECK(f.h.check(f.a0, g0) == block_state::intact);
  f.h.deallocate(f.a0);
  f.h.deallocate(f.a1);
}

TEST_CASE("a neighbour sealed and advised long before makes a later entry's freed block's pages advised again") {
  fixture f;
  std::uint64_t g0 = 0;
  REQUIRE(f.h.seal(f.a0, &g0) == block_state::intact);
  f.h.decay(false);  // a0's page advised now
  REQUIRE(f.rec.advised(reinterpret_cast<std::uintptr_t>(f.a0)));
  const std::uint64_t since = f.rec.mark();
  REQUIRE(f.h.seal(f.a1) == block_state::intact);  // entry: pages 0-1, into an empty queue
  f.reuse_a1();
  f.h.decay(false);
  // Before 05f5a50 this batch advised nothing (its only entry's block is
  // not sealed). Now a0, whose seal was advised already, makes both pages go:
  // page 0 again (seal_all's comment: advising a page again that was read
  // since clears its referenced bit) and page 1, which holds only live data.
  INFO("advised in this batch: " << f.rec.bytes_since(since) << " bytes");
  CHECK(f.rec.bytes_since(since) == 0);
  CHECK_FALSE(f.rec.advised(f.page1(), since));
  CHECK(f.h.check(f.a0, g0) == block_state::intact);
  f.h.deallocate(f.a0);
  f.h.deallocate(f.a1);
}
