// write_and_seal's released tail (b7fd46a) at its edges, on the real OS
// (MAP_DROPPABLE here; the _fallback target forces private memory).
//
// Blocks of 15 to 17 whole pages, every class from 64 KiB to 256 KiB that
// holds 16 or more pages, large blocks (own mapping), and a large block
// recycled from the large cache (its mapping bigger than asked); lengths n
// at and around every page boundary that decides the released span (0, 1,
// a page -1/0/+1, so that 15, 16 or 17 whole pages follow, size - 1, size).
// Each block first holds other bytes everywhere, sealed (a rewrite of an
// old life), or dropped. After each write_and_seal: the bytes are src then
// zeros; then one page at a time is dropped (at the value's edges, the
// released span's edges, and a spread of others) and check() must not say
// intact if the block's bytes now differ from what was written.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack18/common.h"

using attack18::fill;
using attack18::holds;
using attack18::kPage;
using attack18::name;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

std::vector<std::size_t> lengths(std::size_t size) {
  std::set<std::size_t> ns;
  auto add = [&](long long v) {
    if (v >= 0 && static_cast<std::size_t>(v) <= size) ns.insert(static_cast<std::size_t>(v));
  };
  const long long s = static_cast<long long>(size);
  const long long P = static_cast<long long>(kPage);
  for (long long d : {-1LL, 0LL, 1LL, 8LL, -8LL}) {
    add(0 + d);
    add(P + d);
    add(2 * P + d);
    add(s - 15 * P + d);
    add(s - 16 * P + d);
    add(s - 17 * P + d);
    add(s - P + d);
    add(s + d);
  }
  add(1);
  add(7);
  add(9);
  return {ns.begin(), ns.end()};
}

std::vector<std::size_t> pages_to_drop(std::size_t size, std::size_t n) {
  const std::size_t pages = (size + kPage - 1) / kPage;
  std::set<std::size_t> ps;
  auto add = [&](long long v) {
    if (v >= 0 && static_cast<std::size_t>(v) < pages) ps.insert(static_cast<std::size_t>(v));
  };
  const long long np = static_cast<long long>(n / kPage);
  for (long long d = -1; d <= 2; ++d) add(np + d);
  add(0);
  add(1);
  add(static_cast<long long>(pages) - 1);
  add(static_cast<long long>(pages) - 2);
  for (std::size_t p = 3; p < pages; p += 11) add(static_cast<long long>(p));
  return {ps.begin(), ps.end()};
}

struct tally {
  long writes = 0, drops = 0, dropped_answers = 0, intact_over_zero_pages = 0;
};

// One block: every length, each from an old life that is sealed, dropped or
// live; then drops page by page.
void exercise(droppable_resource& res, block_ref b, tally& t, std::uint64_t seed_base) {
  const std::size_t size = res.usable_size(b.ptr);
  REQUIRE(size != 0);
  auto* p = static_cast<unsigned char*>(b.ptr);
  std::vector<unsigned char> src(size), old(size);
  int variant = 0;
  for (std::size_t n : lengths(size)) {
    CAPTURE(size);
    CAPTURE(n);
    const std::uint64_t seed = seed_base + n;
    fill(src.data(), n, seed, (seed & 1) != 0);
    // The old life: other bytes everywhere.
    fill(old.data(), size, seed ^ 0x5555);
    switch (variant++ % 3) {
      case 0:  // sealed
        REQUIRE(res.write_and_seal(b, old.data(), size) == block_state::intact);
        break;
      case 1:  // dropped: a middle page lost, found by a check
        REQUIRE(res.write_and_seal(b, old.data(), size) == block_state::intact);
        REQUIRE(res.drop_for_testing(p + size / 2, 1) == 0);
        REQUIRE(res.check(b) == block_state::dropped);
        break;
      default:  // written over while sealed, not resealed
        std::memcpy(p, old.data(), size);
        break;
    }
    const std::uint64_t before = b.generation;
    const block_state st = res.write_and_seal(b, src.data(), n);
    ++t.writes;
    CHECK_MESSAGE(st == block_state::intact, name(st));
    CHECK(b.generation != before);
    CHECK(holds(p, size, src.data(), n));
    for (std::size_t pg : pages_to_drop(size, n)) {
      CAPTURE(pg);
      REQUIRE(res.write_and_seal(b, src.data(), n) == block_state::intact);
      REQUIRE(res.drop_for_testing(p + pg * kPage, 1) == 0);
      ++t.drops;
      const bool same = holds(p, size, src.data(), n);
      const block_state c = res.check(b);
      if (!same) {
        CHECK_MESSAGE(c != block_state::intact, "intact over a lost page, page ", pg, " of ", size / kPage);
      }
      if (c == block_state::dropped) ++t.dropped_answers;
      if (same && c == block_state::intact) ++t.intact_over_zero_pages;
      // A later re-seal (plain seal) must not revive a loss either.
      const block_state r = res.seal(b);
      if (!same) CHECK_MESSAGE(r != block_state::intact, "seal() vouched for a lost page: ", name(r));
    }
  }
}

}  // namespace

TEST_CASE("released tails at page edges: class blocks, large blocks, recycled large mappings") {
  droppable_resource res;
  MESSAGE("backing: ", std::string(res.stats().droppable ? "droppable" : "private fallback"));
  tally t;
  // Classes: 64 KiB (16 pages: n == 0 releases exactly 16), 68 KiB (17), 72,
  // 80, 128, 256 KiB; a neighbour on each side, sealed with data, must stay
  // intact through all of it.
  for (std::size_t size : {std::size_t{60} << 10, std::size_t{64} << 10, std::size_t{68} << 10,
                           std::size_t{72} << 10, std::size_t{80} << 10, std::size_t{128} << 10,
                           std::size_t{256} << 10}) {
    CAPTURE(size);
    std::vector<unsigned char> nb(size);
    block_ref left = res.allocate_block(size);
    block_ref b = res.allocate_block(size);
    block_ref right = res.allocate_block(size);
    fill(nb.data(), size, size);
    REQUIRE(res.write_and_seal(left, nb.data(), size) == block_state::intact);
    REQUIRE(res.write_and_seal(right, nb.data(), size) == block_state::intact);
    exercise(res, b, t, size);
    CHECK(res.check(left) == block_state::intact);
    CHECK(res.check(right) == block_state::intact);
    CHECK(holds(static_cast<unsigned char*>(left.ptr), size, nb.data(), size));
    CHECK(holds(static_cast<unsigned char*>(right.ptr), size, nb.data(), size));
    res.deallocate(left.ptr, size);
    res.deallocate(b.ptr, size);
    res.deallocate(right.ptr, size);
  }
  // Large blocks: page multiples and not.
  for (std::size_t size : {(std::size_t{256} << 10) + 1, std::size_t{300000}, std::size_t{65} * kPage,
                           std::size_t{1} << 20}) {
    CAPTURE(size);
    block_ref b = res.allocate_block(size);
    exercise(res, b, t, size * 3);
    res.deallocate(b.ptr, size);
  }
  // A recycled large mapping: 1 MiB freed to the cache, then 300 KB asked.
  {
    block_ref big = res.allocate_block(std::size_t{1} << 20);
    std::vector<unsigned char> junk(std::size_t{1} << 20);
    fill(junk.data(), junk.size(), 99);
    REQUIRE(res.write_and_seal(big, junk.data(), junk.size()) == block_state::intact);
    void* at = big.ptr;
    res.deallocate(big.ptr, std::size_t{1} << 20);
    block_ref b = res.allocate_block(300000);
    MESSAGE("recycled: ", std::string(b.ptr == at ? "yes" : "no"), ", usable ", res.usable_size(b.ptr));
    exercise(res, b, t, 777);
    res.deallocate(b.ptr, 300000);
  }
  MESSAGE(t.writes, " write_and_seal, ", t.drops, " single-page drops, ", t.dropped_answers, " dropped, ",
          t.intact_over_zero_pages, " intact over a dropped page of zeros");
}
