// e7f5ba6 closed tests/attack4:revival_read_bug_test by giving a *revived*
// block (dropped -> sealed by write_and_seal / seal_rewritten) a new
// generation, so a reader who copied it while a page was gone reads `stale`.
// But the generation moves only if somebody noticed the drop first (state
// `dropped`). If the page is lost and the block is rewritten before any
// check() or seal() looks, the rewrite restores the witness words, the
// re-seal inside write_and_seal() reads the old witnesses again *after* the
// copy put them back, sees no loss, and seals sealed -> sealed with the same
// generation. The reader's copy holds the lost page's zeros and its second
// check says `intact`: the safe read protocol ("check, read, check again")
// is as unsound as before the fix.
//
// The writer does what README recommends for an in-place update ("update a
// sealed block in place only with write_and_seal()"), with exactly the bytes
// the block already held (an idempotent refresh), through its block_ref.
// Played on one thread in an order two threads can run: reader check #1,
// reader copies half, the kernel drops a page, reader copies the rest,
// writer refreshes, reader check #2.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

void run(droppable_resource& res, std::size_t n, std::size_t align, std::size_t drop_at, bool via_seal) {
  block_ref b = res.allocate_block(n, align);
  const std::size_t usable = res.usable_size(b.ptr);
  std::vector<unsigned char> want(usable);
  for (std::size_t k = 0; k < usable; ++k) want[k] = static_cast<unsigned char>(k % 251 + 1);
  REQUIRE(res.write_and_seal(b, want.data(), usable) == block_state::intact);
  auto* p = static_cast<unsigned char*>(b.ptr);
  block_ref reader = b;  // the reader's copy of the handle
  std::vector<unsigned char> copy(usable);

  REQUIRE(res.check(reader) == block_state::intact);           // reader: check #1
  std::memcpy(copy.data(), p, drop_at);                          // reader copies a part
  REQUIRE(res.drop_for_testing(p + drop_at, 1) == 0);            // kernel drops a page
  std::memcpy(copy.data() + drop_at, p + drop_at, usable - drop_at);  // reader copies the rest: zeros
  // Writer: refreshes the block in place, same bytes. No check() ran since the drop.
  if (via_seal) {
    std::memcpy(p, want.data(), usable);
    CHECK(res.seal(b) == block_state::intact);
  } else {
    CHECK(res.write_and_seal(b, want.data(), usable) == block_state::intact);
  }
  const bool same = std::memcmp(copy.data(), want.data(), usable) == 0;
  CHECK_FALSE(same);  // the copy holds the dropped page's zeros
  block_state again = res.check(reader);                        // reader: check #2
  CHECK_MESSAGE(!(again == block_state::intact && !same),
                "reader's second check says intact over a copy holding a dropped page's zeros (generation "
                    << reader.generation << " -> " << res.generation(b.ptr) << ")");
  res.deallocate(b);
}

}  // namespace

TEST_CASE("write_and_seal() refresh over an unnoticed drop keeps the generation: reader's copy of zeros reads intact") {
  droppable_resource res;
  SUBCASE("page-aligned 3-page block, last page dropped") { run(res, 3 * 4096, 4096, 2 * 4096 + 100, false); }
  SUBCASE("straddling 3000-byte block") { run(res, 3000, 8, 1500, false); }
}

TEST_CASE("the same with a plain rewrite and seal()") {
  droppable_resource res;
  run(res, 3 * 4096, 4096, 2 * 4096 + 100, true);
}

TEST_CASE("the same in the private fallback") {
  dropalloc::resource_options o;
  o.force_fallback = true;
  droppable_resource res(o);
  run(res, 3 * 4096, 4096, 2 * 4096 + 100, false);
}
