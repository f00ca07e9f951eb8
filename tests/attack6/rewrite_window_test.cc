// Regression (passes): the order of a reader's second check against an
// update in place made with plain writes. The allocator cannot see plain
// writes, so what protects a reader is the generation the re-seal gives:
//   * a reader who copied while a page was gone and checks again after the
//     writer restored that page and re-sealed (seal(), seal_rewritten() or
//     write_and_seal()) reads `stale`, never `intact`;
//   * but a check that falls after the writer restored the page and before
//     the re-seal still answers for the old seal: `intact`, over a copy that
//     holds zeros. That is the documented limit (README, "A generation names
//     one sealed version"): keep readers from checking while you update in
//     place with plain writes, or use write_and_seal(), during which a check
//     answers `unsealed`. Should the limit ever be closed, this test says so
//     and the README must change with it.
// Deterministic: one thread plays writer, dropper and reader in turn.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

enum class update { seal, seal_rewritten, write_and_seal };

struct sealed_block {
  droppable_resource& res;
  block_ref b;
  std::vector<unsigned char> bytes;

  sealed_block(droppable_resource& r, std::size_t n) : res(r), bytes(n, 0x5a) {
    b = res.allocate_block(n, n % 4096 == 0 ? 4096 : 8);
    REQUIRE(res.write_and_seal(b, bytes.data(), n) == block_state::intact);
  }
  ~sealed_block() { res.deallocate(b); }

  // A reader's copy taken after the block's last page was dropped.
  std::vector<unsigned char> copy_after_drop() {
    REQUIRE(res.check(b) == block_state::intact);
    REQUIRE(res.drop_for_testing(static_cast<char*>(b.ptr) + bytes.size() - 1, 1) == 0);
    std::vector<unsigned char> copy(bytes.size());
    std::memcpy(copy.data(), b.ptr, copy.size());
    REQUIRE(copy != bytes);  // the drop took data
    return copy;
  }
};

}  // namespace

TEST_CASE("a reader who copied during a drop reads stale after the writer restores and re-seals") {
  droppable_resource res;
  for (std::size_t n : {24u, 3000u, 5000u, 3u * 4096u, 300000u}) {
    for (update how : {update::seal, update::seal_rewritten, update::write_and_seal}) {
      CAPTURE(n);
      CAPTURE(static_cast<int>(how));
      sealed_block blk(res, n);
      const block_ref reader = blk.b;
      blk.copy_after_drop();
      switch (how) {
        case update::seal:
          std::memcpy(blk.b.ptr, blk.bytes.data(), n);
          CHECK(res.seal(blk.b) == block_state::intact);
          break;
        case update::seal_rewritten:
          std::memcpy(blk.b.ptr, blk.bytes.data(), n);
          CHECK(res.seal_rewritten(blk.b) == block_state::intact);
          break;
        case update::write_and_seal:
          CHECK(res.write_and_seal(blk.b, blk.bytes.data(), n) == block_state::intact);
          break;
      }
      CHECK(blk.b.generation != reader.generation);
      CHECK(res.check(reader) == block_state::stale);
      CHECK(res.check(blk.b) == block_state::intact);
    }
  }
}

TEST_CASE("the documented limit: a check between a plain rewrite and its re-seal answers for the old seal") {
  droppable_resource res;
  for (std::size_t n : {24u, 3000u, 300000u}) {
    CAPTURE(n);
    sealed_block blk(res, n);
    const block_ref reader = blk.b;
    blk.copy_after_drop();
    std::memcpy(blk.b.ptr, blk.bytes.data(), n);  // puts the witness words back
    CHECK(res.check(reader) == block_state::intact);  // the copy holds zeros: see the header
    CHECK(res.seal(blk.b) == block_state::intact);
    CHECK(res.check(reader) == block_state::stale);
  }
}
