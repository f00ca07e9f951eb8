// Misuse in the default build: double, foreign and interior frees are refused
// and counted; a wrong size or alignment on a sized free is ignored (the
// arena knows the class). Either way no other block and no metadata suffers.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

struct held {
  dropalloc::block_ref ref;
  std::size_t size;
  unsigned char tag;
};

held make(droppable_resource& res, std::size_t size, unsigned char tag) {
  held h{res.allocate_block(size), size, tag};
  std::memset(h.ref.ptr, tag, size);
  REQUIRE(res.seal(h.ref.ptr) == block_state::intact);
  return h;
}

bool whole(droppable_resource& res, const held& h) {
  auto* p = static_cast<unsigned char*>(h.ref.ptr);
  for (std::size_t i = 0; i < h.size; ++i) {
    if (p[i] != h.tag) return false;
  }
  return res.check(h.ref.ptr, h.ref.generation) == block_state::intact;
}

}  // namespace

TEST_CASE("refused frees touch nothing: neighbours stay whole, no block is handed out twice") {
  droppable_resource res, other;
  std::vector<held> keep;
  for (std::size_t size : {8, 48, 1000, 4096, 20000, 300000}) {
    for (int i = 0; i < 8; ++i) keep.push_back(make(res, size, static_cast<unsigned char>(keep.size() + 1)));
  }
  auto live_before = res.stats().blocks_live;
  int local = 0;
  void* theirs = other.allocate(64);
  void* from_malloc = std::malloc(64);
  std::vector<void*> bad;
  bad.push_back(&local);                                      // stack
  bad.push_back(theirs);                                      // another resource's block
  bad.push_back(from_malloc);                                 // the C heap
  for (auto& h : keep) {
    bad.push_back(static_cast<char*>(h.ref.ptr) + 8);         // interior
    if (h.size > 4096) bad.push_back(static_cast<char*>(h.ref.ptr) + 4096);  // interior page
  }
  hardening::stderr_capture capture;
  // Double frees, for each kind of block: free once properly, then again.
  for (std::size_t size : {std::size_t{48}, std::size_t{20000}, std::size_t{300000}}) {
    void* p = res.allocate(size);
    res.deallocate(p, size);
    res.deallocate(p, size);
  }
  for (void* p : bad) res.deallocate(p, 64);  // only the first 16 refusals are printed
  std::string out = capture.text();
  auto refused = bad.size() + 3;
  CHECK(res.stats().misuse_refused == refused);
  CHECK(out.find("double free") != std::string::npos);
  CHECK(out.find("not a block of this resource") != std::string::npos);
  CHECK(res.stats().blocks_live == live_before);
  for (auto& h : keep) CHECK(whole(res, h));
  CHECK(*static_cast<volatile int*>(&local) == 0);

  // The free lists are not corrupted: fresh blocks are distinct and none
  // overlaps a block still held.
  std::set<std::uintptr_t> seen;
  for (auto& h : keep) seen.insert(reinterpret_cast<std::uintptr_t>(h.ref.ptr));
  std::vector<std::pair<void*, std::size_t>> fresh;
  for (int i = 0; i < 3000; ++i) {
    std::size_t size = i % 3 == 0 ? 48 : i % 3 == 1 ? 20000 : 8;
    void* p = res.allocate(size);
    CHECK(seen.insert(reinterpret_cast<std::uintptr_t>(p)).second);
    std::memset(p, 0xee, size);
    fresh.emplace_back(p, size);
  }
  for (auto& h : keep) CHECK(whole(res, h));
  for (auto [p, n] : fresh) res.deallocate(p, n);
  for (auto& h : keep) res.deallocate(h.ref.ptr, h.size);
  CHECK(res.stats().blocks_live == 0);
  other.deallocate(theirs, 64);
  std::free(from_malloc);
}

#if !defined(DROPALLOC_CHECKED) || !DROPALLOC_CHECKED
// (Under --config=check such frees are refused instead: misuse_checked_test.)
TEST_CASE("default build: a wrong size or alignment on a sized free frees the right block") {
  droppable_resource res;
  held a = make(res, 100, 1);
  held b = make(res, 100, 2);
  held big = make(res, 50000, 3);
  hardening::stderr_capture capture;
  res.deallocate(a.ref.ptr, 7, 1);           // too small, odd alignment
  res.deallocate(big.ref.ptr, 1 << 20, 64);  // too large
  CHECK(capture.text().empty());
  CHECK(res.stats().misuse_refused == 0);
  CHECK(res.check(a.ref.ptr, a.ref.generation) == block_state::stale);
  CHECK(res.check(big.ref.ptr, big.ref.generation) == block_state::stale);
  CHECK(whole(res, b));
  CHECK(res.stats().blocks_live == 1);
  res.deallocate(b.ref.ptr, 100);
}
#endif
