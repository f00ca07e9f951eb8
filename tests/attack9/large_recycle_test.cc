// Regression: a cached large mapping handed out again for a request down to
// half its size, its pages past the request released (MADV_DONTNEED) at
// reuse. Old handles (the freed life, and a rewritten life before it) read
// `stale` and their seal / write_and_seal / seal_rewritten act on nothing;
// the new life sees zeros past the request, usable_size covers the whole
// mapping, and drops before the request, in the released tail and in the
// last page read as the model says (data lost: `dropped`; zeros only:
// `intact`). Run with and without DROPALLOC_FORCE_FALLBACK=1 (BUILD).
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/pattern.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;
using dropalloc::testing::all_zero;

namespace {
constexpr std::size_t kPg = 4096;
}  // namespace

TEST_CASE("recycled large mapping: old lives stale, released tail zero, drops seen where data was") {
  droppable_resource r;
  for (std::size_t old_size : {std::size_t{600} * 1024, std::size_t{1024} * 1024 + 123}) {
    for (std::size_t new_size : {old_size / 2 + 1, old_size - kPg, old_size / 2 + 3 * kPg + 77}) {
      block_ref a = r.allocate_block(old_size);
      const std::size_t a_usable = r.usable_size(a.ptr);
      std::vector<unsigned char> old_bytes(a_usable, 0x77);
      REQUIRE(r.write_and_seal(a, old_bytes.data(), old_bytes.size()) == block_state::intact);
      const block_ref a_first = a;
      REQUIRE(r.write_and_seal(a, old_bytes.data(), old_size) == block_state::intact);  // a new life
      CHECK(r.check(a_first) == block_state::stale);
      r.deallocate(a);
      block_ref b = r.allocate_block(new_size);
      if (b.ptr != a.ptr) {
        MESSAGE("not recycled for " << new_size << " after " << old_size);
        r.deallocate(b);
        continue;
      }
      const std::size_t usable = r.usable_size(b.ptr);
      CHECK(usable >= new_size);
      CHECK(r.check(a) == block_state::stale);
      CHECK(r.check(a_first) == block_state::stale);
      CHECK(r.seal(a) == block_state::stale);
      CHECK(r.seal_rewritten(a) == block_state::stale);
      CHECK(r.write_and_seal(a, old_bytes.data(), 10) == block_state::stale);
      CHECK(r.check(b) == block_state::unsealed);
      auto* p = static_cast<unsigned char*>(b.ptr);
      const std::size_t req_end = (new_size + kPg - 1) / kPg * kPg;
      CHECK(all_zero(p + req_end, usable - req_end));  // released at reuse
      // Write the request only, seal: the tail holds zeros, so it has no witness.
      std::vector<unsigned char> mine(new_size);
      for (std::size_t i = 0; i < new_size; ++i) mine[i] = static_cast<unsigned char>(i % 253 + 1);
      std::memcpy(p, mine.data(), new_size);
      REQUIRE(r.seal(b) == block_state::intact);
      if (usable > req_end) {
        REQUIRE(r.drop_for_testing(p + usable - kPg, kPg) == 0);
        CHECK(r.check(b) == block_state::intact);  // zeros lost nothing
      }
      REQUIRE(r.drop_for_testing(p + (new_size - 1) / kPg * kPg, kPg) == 0);  // the request's last page
      CHECK(r.check(b) == block_state::dropped);
      CHECK(r.check(a) == block_state::stale);
      // The whole usable size, through the handle.
      std::vector<unsigned char> full(usable, 0x5c);
      REQUIRE(r.write_and_seal(b, full.data(), full.size()) == block_state::intact);
      REQUIRE(r.drop_for_testing(p + usable - kPg, kPg) == 0);
      CHECK(r.check(b) == block_state::dropped);
      r.deallocate(b);
      CHECK(r.check(b) == block_state::stale);
    }
  }
  (void)r.trim();
}
