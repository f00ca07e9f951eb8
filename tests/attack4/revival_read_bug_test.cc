// The safe read protocol (README, droppable_resource.h: "check, read what you
// need, check again; only if the second check says `intact` is what you read
// valid") is unsound across a revival. write_and_seal() (and seal_rewritten())
// take a dropped block back to sealed *with the same generation*, so a
// reader's handle stays valid across the revival, and a copy that read the
// dropped page's zeros is followed by a check that says `intact`.
//
// The reviver need not change a byte: here it writes exactly what was there
// (an idempotent rebuild, what README's example does when write_and_seal says
// a page went: "write it again"). The reader's copy holds zeros the block
// never held at any seal, and both of its checks said `intact`.
//
// The interleaving is played on one thread, in the order two threads can run
// it: reader check #1, reader copies half, kernel drops the page, reader copies
// the rest, another thread's check() finds the loss and write_and_seal()
// revives the block, reader check #2.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("a copy spanning a drop and a same-bytes revival is reported intact") {
  droppable_resource res;
  constexpr std::size_t n = 3 * 4096;
  block_ref b = res.allocate_block(n, 4096);
  std::vector<unsigned char> want(n);
  for (std::size_t k = 0; k < n; ++k) want[k] = static_cast<unsigned char>(k % 251 + 1);
  REQUIRE(res.write_and_seal(b.ptr, want.data(), n) == block_state::intact);
  auto* p = static_cast<unsigned char*>(b.ptr);

  std::vector<unsigned char> copy(n);
  // Reader: check, then read.
  REQUIRE(res.check(b) == block_state::intact);
  std::memcpy(copy.data(), p, n / 2);
  // Kernel: the last page goes.
  REQUIRE(res.drop_for_testing(p + 2 * 4096, 4096) == 0);
  // Reader goes on copying: zeros.
  std::memcpy(copy.data() + n / 2, p + n / 2, n - n / 2);
  // Another thread: sees the loss and writes the same bytes again.
  REQUIRE(res.check(b) == block_state::dropped);
  REQUIRE(res.write_and_seal(b.ptr, want.data(), n) == block_state::intact);
  // Reader: check again. Its copy is not what any seal held.
  block_state again = res.check(b);
  bool same = std::memcmp(copy.data(), want.data(), n) == 0;
  CHECK_FALSE(same);  // the copy does hold the lost page's zeros
  CHECK_MESSAGE(!(again == block_state::intact && !same),
                "second check said intact over a copy holding a dropped page's zeros");
  res.deallocate(b.ptr, n);
}

TEST_CASE("the same with seal_rewritten()") {
  droppable_resource res;
  constexpr std::size_t n = 3000;
  block_ref b = res.allocate_block(n, 8);
  std::vector<unsigned char> want(res.usable_size(b.ptr));
  for (std::size_t k = 0; k < want.size(); ++k) want[k] = static_cast<unsigned char>(k % 251 + 1);
  std::memcpy(b.ptr, want.data(), want.size());
  REQUIRE(res.seal(b) == block_state::intact);
  auto* p = static_cast<unsigned char*>(b.ptr);
  std::vector<unsigned char> copy(want.size());
  REQUIRE(res.check(b) == block_state::intact);
  REQUIRE(res.drop_for_testing(p, 1) == 0);
  std::memcpy(copy.data(), p, copy.size());
  REQUIRE(res.check(b) == block_state::dropped);
  std::memcpy(p, want.data(), want.size());  // rewrite all of it
  REQUIRE(res.seal_rewritten(p) == block_state::intact);
  bool same = std::memcmp(copy.data(), want.data(), want.size()) == 0;
  CHECK_MESSAGE(!(res.check(b) == block_state::intact && !same),
                "second check said intact over a copy holding a dropped page's zeros");
  res.deallocate(b.ptr, n);
}
