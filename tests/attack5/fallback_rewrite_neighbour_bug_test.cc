// In the private fallback README promises "written but unsealed blocks are
// ordinary memory that the kernel never drops". The fix for the attack4
// finding (5a293b5, core/seal_check.cc advise_sealed /
// page_held_only_by_sealed) advises a shared first/last page only if every
// other block on it is *sealed or dropped*, holding their seal locks. But the
// seal lock does not stop a block's owner from writing it, and the rules have
// two legitimate ways of writing a block that is sealed or dropped:
//
//  * a dropped block is revived by writing every byte again and then calling
//    seal_rewritten() (README: "only a full rewrite revives it ... or
//    seal_rewritten(p) once you have written every byte again");
//  * a sealed block is updated in place and sealed again ("A write after
//    sealing needs a new seal()").
//
// Between the write and that seal the data is written but unsealed. A
// neighbour's seal() (or seal_all(), which checks no neighbour at all) gives
// the shared page MADV_FREE, which turns the fresh writes into clean lazily
// freed memory. Reclaim (MADV_PAGEOUT here: exactly what the kernel does to
// such pages under a limit, no swap needed) discards them. The owner's
// seal_rewritten() / seal() then vouches for the zeros: `intact` over bytes
// the program wrote otherwise and never sealed.
//
// Layout (thread cache off, blocks in address order): class 3072, so
//   b0 = [0, 3072)       page 0
//   b1 = [3072, 6144)    pages 0 and 1
//   b2 = [6144, 9216)    pages 1 and 2
#include <doctest/doctest.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::uintptr_t kPage = 4096;
constexpr std::size_t kN = 3000;

std::uintptr_t page_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) & ~(kPage - 1); }

// What the kernel does to a page under memory pressure: lazily-freed clean
// pages go, dirty private pages stay (no swap).
void reclaim_page(std::uintptr_t page) {
  REQUIRE(madvise(reinterpret_cast<void*>(page), kPage, MADV_PAGEOUT) == 0);
}

std::size_t count_not(const void* p, std::size_t n, unsigned char v) {
  auto* b = static_cast<const unsigned char*>(p);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) bad += b[i] != v;
  return bad;
}

dropalloc::resource_options fallback() {
  dropalloc::resource_options o;
  o.force_fallback = true;
  o.thread_cache = false;  // blocks in address order
  o.background_decay = false;
  return o;
}

struct three {
  droppable_resource res{fallback()};
  std::vector<block_ref> b;
  three() {
    REQUIRE(res.arena_backing() == dropalloc::backing::private_fallback);
    for (int i = 0; i < 3; ++i) {
      b.push_back(res.allocate_block(kN, 8));
      std::memset(b.back().ptr, 0x41 + i, kN);
    }
    REQUIRE(page_of(b[1].ptr) == page_of(b[0].ptr));
    REQUIRE(page_of(static_cast<char*>(b[1].ptr) + kN - 1) == page_of(b[2].ptr));
  }
  ~three() {
    for (auto& x : b) res.deallocate(x.ptr, kN);
  }
  std::uintptr_t page0() const { return page_of(b[0].ptr); }
  std::uintptr_t page1() const { return page_of(b[2].ptr); }
};

// b0 and b1 sealed (page 0 advised: both sealed), page 0 reclaimed: both
// dropped, as under a real limit.
void make_b1_dropped(three& t) {
  REQUIRE(t.res.seal(t.b[0]) == block_state::intact);
  REQUIRE(t.res.seal(t.b[1]) == block_state::intact);
  reclaim_page(t.page0());
  REQUIRE(t.res.check(t.b[1]) == block_state::dropped);
}

}  // namespace

TEST_CASE("fallback: a dropped block being rewritten loses its rewrite to a neighbour's seal()") {
  three t;
  make_b1_dropped(t);
  // b1's owner revives it as README says: write every byte again...
  std::memset(t.b[1].ptr, 0x52, kN);
  // ...while b2's owner seals b2. b1 is `dropped`, so page 1 (b1's tail, b2's
  // head) counts as held only by sealed blocks and is advised whole.
  REQUIRE(t.res.seal(t.b[2]) == block_state::intact);
  reclaim_page(t.page1());
  // b1's owner: written, not yet sealed. Ordinary memory in the fallback.
  std::size_t lost = count_not(t.b[1].ptr, kN, 0x52);
  CHECK_MESSAGE(lost == 0, lost << " freshly rewritten bytes of dropped b1 were discarded (neighbour b2's seal advised them)");
  // And the documented revival certifies the zeros.
  block_state s = t.res.seal_rewritten(t.b[1]);
  CHECK_MESSAGE(!(s == block_state::intact && lost != 0),
                "seal_rewritten(b1) says intact, yet b1 holds zeros where the program wrote 0x52");
}

TEST_CASE("fallback: a sealed block updated in place loses the update to a neighbour's seal() before its re-seal") {
  three t;
  // b1 sealed with data only in its page-0 portion (its page-1 portion all
  // zeros: no witness there), b0 sealed too.
  std::memset(t.b[1].ptr, 0, kN);
  std::memset(t.b[1].ptr, 0x42, kPage - (reinterpret_cast<std::uintptr_t>(t.b[1].ptr) - t.page0()));
  REQUIRE(t.res.seal(t.b[0]) == block_state::intact);
  REQUIRE(t.res.seal(t.b[1]) == block_state::intact);
  // b1's owner updates it in place (all 0x62), to seal it again afterwards.
  std::memset(t.b[1].ptr, 0x62, kN);
  // b2's owner seals b2: b1 is `sealed`, so page 1 is advised whole.
  REQUIRE(t.res.seal(t.b[2]) == block_state::intact);
  reclaim_page(t.page1());
  std::size_t lost = count_not(t.b[1].ptr, kN, 0x62);
  CHECK_MESSAGE(lost == 0, lost << " bytes b1's owner wrote after its seal were discarded (neighbour b2's seal advised them)");
  // The re-seal sees no loss (the old seal had no witness on page 1) and
  // vouches for the zeros.
  block_state s = t.res.seal(t.b[1]);
  CHECK_MESSAGE(!(s == block_state::intact && lost != 0),
                "re-seal of b1 says intact, yet b1 holds zeros where the program wrote 0x62");
}

TEST_CASE("fallback: seal_all() advises shared pages whole, losing a dropped neighbour's rewrite") {
  three t;
  make_b1_dropped(t);
  std::memset(t.b[1].ptr, 0x52, kN);  // b1's owner has rewritten all of it
  // Nobody is writing an unsealed block now: seal_all's contract holds. It
  // seals b2 (live) and advises b2's pages, page 1 included.
  REQUIRE(t.res.seal_all() == 1);
  reclaim_page(t.page1());
  std::size_t lost = count_not(t.b[1].ptr, kN, 0x52);
  CHECK_MESSAGE(lost == 0, lost << " rewritten bytes of dropped b1 were discarded by seal_all's advice");
  block_state s = t.res.seal_rewritten(t.b[1]);
  CHECK_MESSAGE(!(s == block_state::intact && lost != 0),
                "seal_rewritten(b1) says intact, yet b1 holds zeros where the program wrote 0x52");
}
