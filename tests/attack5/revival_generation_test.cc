// Regression (passes): generations across revivals (e7f5ba6). A handle of an
// earlier life of a block - before a revival, before a free, before the
// arena was unmapped and another mapped at the same address - never reads
// intact or unsealed, is refused by seal(block_ref), seal_rewritten(block_ref),
// write_and_seal(block_ref) and deallocate(block_ref); generations never go
// back; the C API's handles behave the same.
#include <doctest/doctest.h>

#include <cstring>
#include <set>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/dropalloc_c.h"
#include "allocator/os/fake_os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

bool honest_for_old(block_state s) { return s == block_state::stale || s == block_state::foreign; }

}  // namespace

TEST_CASE("old handles across revive / free / reallocate / trim with address reuse") {
  for (std::size_t n : {24u, 3000u, 5000u, 3u * 4096u, 300000u}) {
    CAPTURE(n);
    dropalloc::os::fake_os os;
    os.reuse_unmapped_arena = true;
    dropalloc::resource_options o;
    o.os = &os;
    o.thread_cache = false;
    droppable_resource res(o);
    std::vector<block_ref> old;  // every handle ever held, each of an earlier life
    std::set<std::uint64_t> seen;
    std::vector<unsigned char> src(n, 0x5a);
    void* addr = nullptr;
    std::uint64_t last = 0;
    for (int round = 0; round < 6; ++round) {
      block_ref b = res.allocate_block(n);
      if (addr == nullptr) addr = b.ptr;
      REQUIRE(b.ptr == addr);  // the same address every life
      CHECK(b.generation > last);
      last = b.generation;
      REQUIRE(res.write_and_seal(b, src.data(), n) == block_state::intact);
      for (int rev = 0; rev < 3; ++rev) {
        block_ref before = b;
        REQUIRE(res.drop_for_testing(b.ptr, 1) == 0);
        REQUIRE(res.check(b) == block_state::dropped);
        if (rev % 2 == 0) {
          REQUIRE(res.write_and_seal(b, src.data(), n) == block_state::intact);
        } else {
          std::memcpy(b.ptr, src.data(), n);
          std::memset(static_cast<char*>(b.ptr) + n, 0, res.usable_size(b.ptr) - n);
          REQUIRE(res.seal_rewritten(b) == block_state::intact);
        }
        CHECK(b.generation > before.generation);
        CHECK(b.generation == res.generation(b.ptr));
        last = b.generation;
        old.push_back(before);
      }
      for (const block_ref& h : old) {
        CAPTURE(h.generation);
        CHECK(honest_for_old(res.check(h)));
        block_ref copy = h;
        CHECK(honest_for_old(res.seal(copy)));
        CHECK(honest_for_old(res.seal_rewritten(copy)));
        CHECK(honest_for_old(res.write_and_seal(copy, src.data(), n)));
        CHECK(copy.generation == h.generation);
        auto refused = res.stats().misuse_refused;
        res.deallocate(h);  // refused: not the current life
        CHECK(res.stats().misuse_refused == refused + 1);
        CHECK(res.check(b) == block_state::intact);
      }
      CHECK(seen.insert(b.generation).second);
      old.push_back(b);
      res.deallocate(b);
      if (round % 2 == 1) res.trim();  // arena unmapped; the next maps at the same address
    }
    for (const block_ref& h : old) CHECK(honest_for_old(res.check(h)));
  }
}

TEST_CASE("C API: dropalloc_seal_rewritten moves the generation; the old handle reads STALE") {
  dropalloc_resource* r = dropalloc_create(DROPALLOC_NO_THREAD_CACHE);
  REQUIRE(r != nullptr);
  dropalloc_block b = dropalloc_alloc(r, 3000, 0);
  REQUIRE(b.ptr != nullptr);
  std::memset(b.ptr, 7, 3000);
  REQUIRE(dropalloc_seal(r, b.ptr) == DROPALLOC_INTACT);
  REQUIRE(dropalloc_drop_for_testing(r, b.ptr, 1) == 0);
  CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_DROPPED);
  std::memset(b.ptr, 7, dropalloc_usable_size(r, b.ptr));
  CHECK(dropalloc_seal_rewritten(r, b.ptr) == DROPALLOC_INTACT);
  CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_STALE);
  CHECK(dropalloc_is_intact(r, b) == 0);
  dropalloc_block now{b.ptr, dropalloc_generation(r, b.ptr)};
  CHECK(now.generation > b.generation);
  CHECK(dropalloc_is_intact(r, now) == 1);
  dropalloc_free(r, b.ptr);
  CHECK(dropalloc_check(r, now.ptr, now.generation) == DROPALLOC_STALE);
  dropalloc_destroy(r);
}
