// In the private fallback (no MAP_DROPPABLE, or DROPALLOC_FORCE_FALLBACK=1)
// README promises: "written but unsealed blocks are ordinary memory that the
// kernel never drops", and "sealed pages are still lazily freed (MADV_FREE) ...
// the drop check reports exactly those blocks".
//
// Since blocks sit back to back (d9f79e5), seal() gives MADV_FREE to every
// page its block touches, whole (core/seal_check.cc, heap::seal:
// os_->seal_pages(base + run.first * kPage, pages * kPage)), and seal_all()
// to every page of a run of sealed blocks. Those pages are shared with the
// neighbours: a live, written, *unsealed* neighbour on the first or last page
// of a sealed block becomes lazily-freed memory too, and the kernel discards it
// under pressure (no swap needed: a lazily-freed clean page is simply freed).
// The unsealed neighbour then reads zeros, silently: check() says `unsealed`
// (no loss reported, as promised for ordinary memory), and a later seal() or
// seal_all() certifies the zeros as `intact`.
//
// Reclaim is simulated exactly with MADV_PAGEOUT (what the kernel does to
// these pages under a memory limit): without swap it cannot page out dirty
// private memory, so only the pages given MADV_FREE go. The control case
// shows that an unsealed block whose pages no seal touched keeps its data.
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

std::uintptr_t page_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) & ~(kPage - 1); }

// What the kernel does to the range under memory pressure.
void reclaim(const void* p, std::size_t n) {
  auto from = page_of(p);
  auto to = (reinterpret_cast<std::uintptr_t>(p) + n + kPage - 1) & ~(kPage - 1);
  REQUIRE(madvise(reinterpret_cast<void*>(from), to - from, MADV_PAGEOUT) == 0);
}

bool all_bytes(const void* p, std::size_t n, unsigned char v) {
  auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (b[i] != v) return false;
  }
  return true;
}

dropalloc::resource_options fallback() {
  dropalloc::resource_options o;
  o.force_fallback = true;
  o.thread_cache = false;  // blocks in address order
  o.background_decay = false;
  return o;
}

}  // namespace

TEST_CASE("fallback: an unsealed block keeps its data when no seal touched its pages (control)") {
  droppable_resource res(fallback());
  REQUIRE(res.arena_backing() == dropalloc::backing::private_fallback);
  constexpr std::size_t n = 3000;  // class 3072: block 1 straddles pages 0 and 1
  std::vector<block_ref> b;
  for (int i = 0; i < 3; ++i) {
    b.push_back(res.allocate_block(n, 8));
    std::memset(b.back().ptr, 0x41 + i, n);
  }
  reclaim(b[0].ptr, 3 * 3072);
  for (int i = 0; i < 3; ++i) CHECK(all_bytes(b[i].ptr, n, static_cast<unsigned char>(0x41 + i)));
  for (auto& x : b) res.deallocate(x.ptr, n);
}

TEST_CASE("fallback: sealing a block makes its unsealed neighbours' data reclaimable") {
  droppable_resource res(fallback());
  REQUIRE(res.arena_backing() == dropalloc::backing::private_fallback);
  constexpr std::size_t n = 3000;
  std::vector<block_ref> b;
  for (int i = 0; i < 3; ++i) {
    b.push_back(res.allocate_block(n, 8));
    std::memset(b.back().ptr, 0x41 + i, n);
  }
  // b[1] straddles the page it shares with b[0] and the one it shares with b[2].
  REQUIRE(page_of(b[1].ptr) == page_of(b[0].ptr));
  REQUIRE(page_of(static_cast<char*>(b[1].ptr) + n - 1) == page_of(b[2].ptr));
  REQUIRE(res.seal(b[1]) == block_state::intact);  // only b[1] is sealed
  reclaim(b[0].ptr, 3 * 3072);
  // Both of the sealed block's pages hold unsealed neighbours' data: they
  // are not advised in the fallback, so it may well be whole; either answer
  // is honest.
  block_state sealed_now = res.check(b[1]);
  CHECK((sealed_now == block_state::dropped || sealed_now == block_state::intact));
  // The unsealed neighbours were never sealed: README says they are ordinary
  // memory the kernel never drops.
  CHECK(res.check(b[0]) == block_state::unsealed);
  CHECK(res.check(b[2]) == block_state::unsealed);
  CHECK_MESSAGE(all_bytes(b[0].ptr, n, 0x41), "unsealed b[0] lost its data to b[1]'s seal");
  CHECK_MESSAGE(all_bytes(b[2].ptr, n, 0x43), "unsealed b[2] lost its data to b[1]'s seal");
  // And sealing them now certifies the zeros.
  if (!all_bytes(b[0].ptr, n, 0x41)) {
    CHECK(res.seal(b[0]) == block_state::intact);
    MESSAGE("b[0] is now `intact` holding zeros the program never wrote");
  }
  for (auto& x : b) res.deallocate(x.ptr, n);
}

TEST_CASE("fallback: even a small block's seal exposes every other block on its page") {
  droppable_resource res(fallback());
  constexpr std::size_t n = 64;  // 64 blocks per page
  std::vector<block_ref> b;
  for (int i = 0; i < 64; ++i) {
    b.push_back(res.allocate_block(n, 8));
    std::memset(b.back().ptr, 0x10 + i, n);
  }
  REQUIRE(page_of(b[0].ptr) == page_of(b[63].ptr));
  REQUIRE(res.seal(b[5]) == block_state::intact);
  reclaim(b[0].ptr, n);
  int lost = 0;
  for (int i = 0; i < 64; ++i) {
    if (i != 5 && !all_bytes(b[i].ptr, n, static_cast<unsigned char>(0x10 + i))) ++lost;
  }
  CHECK_MESSAGE(lost == 0, lost << " unsealed blocks on the page read zeros after one neighbour's seal");
  for (auto& x : b) res.deallocate(x.ptr, n);
}

TEST_CASE("fallback: a page whose blocks are all sealed is still given to the kernel, and its loss reported") {
  // The other side of the fix: sealing must keep working for small blocks.
  droppable_resource res(fallback());
  constexpr std::size_t n = 64;
  std::vector<block_ref> b;
  for (int i = 0; i < 64; ++i) {
    b.push_back(res.allocate_block(n, 8));
    std::memset(b.back().ptr, 0x10 + i, n);
  }
  REQUIRE(page_of(b[0].ptr) == page_of(b[63].ptr));
  for (auto& x : b) REQUIRE(res.seal(x) == block_state::intact);  // the last seal advises the page
  reclaim(b[0].ptr, n);
  int dropped = 0, wrong = 0;
  for (int i = 0; i < 64; ++i) {
    block_state s = res.check(b[i]);
    if (s == block_state::dropped) ++dropped;
    if (s == block_state::intact && !all_bytes(b[i].ptr, n, static_cast<unsigned char>(0x10 + i))) ++wrong;
  }
  CHECK(wrong == 0);
  CHECK(dropped == 64);
  for (auto& x : b) res.deallocate(x.ptr, n);
}
