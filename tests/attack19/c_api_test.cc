// dropalloc_seal_many at its edges: NULL resource, NULL blocks, NULL states,
// n = 0, and batches around its 128-block stack buffer (127, 128, 129, 256,
// 257), mixed with null, interior, foreign, freed and duplicate pointers;
// each state as dropalloc_seal would answer, and intact only over the
// sealed bytes (checked after drops).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/dropalloc_c.h"
#include "tests/attack19/common.h"

using namespace attack19;

TEST_CASE("dropalloc_seal_many with NULL arguments seals nothing and answers FOREIGN") {
  dropalloc_resource* r = dropalloc_create(0);
  REQUIRE(r != nullptr);
  dropalloc_block b = dropalloc_alloc(r, 100, 0);
  fill(b.ptr, 100, 1);
  void* blocks[] = {b.ptr, b.ptr};
  dropalloc_state st[2] = {DROPALLOC_INTACT, DROPALLOC_INTACT};
  CHECK(dropalloc_seal_many(nullptr, blocks, 2, st) == 0);
  CHECK(st[0] == DROPALLOC_FOREIGN);
  CHECK(st[1] == DROPALLOC_FOREIGN);
  CHECK(dropalloc_seal_many(nullptr, nullptr, 5, nullptr) == 0);
  CHECK(dropalloc_seal_many(nullptr, nullptr, 0, nullptr) == 0);
  st[0] = st[1] = DROPALLOC_INTACT;
  CHECK(dropalloc_seal_many(r, nullptr, 2, st) == 0);
  CHECK(st[0] == DROPALLOC_FOREIGN);
  CHECK(dropalloc_seal_many(r, nullptr, 0, st) == 0);
  CHECK(dropalloc_seal_many(r, blocks, 0, nullptr) == 0);
  CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_UNSEALED);
  // NULL states: sealed all the same; a duplicate is a re-seal.
  CHECK(dropalloc_seal_many(r, blocks, 2, nullptr) == 2);
  CHECK(dropalloc_check(r, b.ptr, b.generation) == DROPALLOC_STALE);
  CHECK(dropalloc_check(r, b.ptr, dropalloc_generation(r, b.ptr)) == DROPALLOC_INTACT);
  dropalloc_free(r, b.ptr);
  dropalloc_destroy(r);
}

TEST_CASE("dropalloc_seal_many around its 128-block buffer answers as dropalloc_seal, intact only over sealed bytes") {
  for (std::size_t n : {1u, 127u, 128u, 129u, 255u, 256u, 257u, 300u}) {
    CAPTURE(n);
    dropalloc_resource* r = dropalloc_create(0);
    dropalloc_resource* other = dropalloc_create(0);
    dropalloc_block theirs = dropalloc_alloc(other, 64, 0);
    std::vector<dropalloc_block> bs;
    std::vector<void*> ptrs;
    std::vector<dropalloc_state> want;
    std::vector<std::size_t> sizes;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t size = i % 4 == 0 ? 24 : i % 4 == 1 ? 700 : i % 4 == 2 ? 5000 : 70000;
      dropalloc_block b = dropalloc_alloc(r, size, 0);
      fill(b.ptr, size, n * 1000 + i);
      bs.push_back(b);
      sizes.push_back(size);
    }
    std::vector<void*> freed;
    for (std::size_t i = 0; i < n; ++i) {
      switch (i % 9) {
        case 3: ptrs.push_back(nullptr); want.push_back(DROPALLOC_FOREIGN); break;
        case 5: ptrs.push_back(static_cast<char*>(bs[i].ptr) + 16); want.push_back(DROPALLOC_FOREIGN); break;
        case 6: ptrs.push_back(theirs.ptr); want.push_back(DROPALLOC_FOREIGN); break;
        case 7:
          ptrs.push_back(bs[i].ptr);
          want.push_back(DROPALLOC_STALE);
          freed.push_back(bs[i].ptr);
          bs[i].ptr = nullptr;
          break;
        default: ptrs.push_back(bs[i].ptr); want.push_back(DROPALLOC_INTACT); break;
      }
      if (i % 11 == 0 && bs[i].ptr != nullptr) {  // a duplicate: a re-seal
        ptrs.push_back(bs[i].ptr);
        want.push_back(DROPALLOC_INTACT);
      }
    }
    for (void* p : freed) dropalloc_free(r, p);
    std::vector<dropalloc_state> st(ptrs.size(), DROPALLOC_DROPPED);
    std::size_t intact = dropalloc_seal_many(r, ptrs.data(), ptrs.size(), st.data());
    std::size_t counted = 0;
    for (std::size_t i = 0; i < ptrs.size(); ++i) {
      CAPTURE(i);
      CHECK(st[i] == want[i]);
      counted += st[i] == DROPALLOC_INTACT;
    }
    CHECK(intact == counted);
    // Drop the first page of every other block: then intact only where the
    // bytes are still those written.
    for (std::size_t i = 0; i < n; i += 2) {
      if (bs[i].ptr != nullptr) (void)dropalloc_drop_for_testing(r, bs[i].ptr, 1);
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (bs[i].ptr == nullptr) continue;
      CAPTURE(i);
      const std::uint64_t g = dropalloc_generation(r, bs[i].ptr);
      if (dropalloc_check(r, bs[i].ptr, g) == DROPALLOC_INTACT) CHECK(holds(bs[i].ptr, sizes[i], n * 1000 + i));
      if (i % 2 == 0 && i % 9 != 3 && i % 9 != 5 && i % 9 != 6) CHECK(dropalloc_check(r, bs[i].ptr, g) != DROPALLOC_INTACT);
      dropalloc_free(r, bs[i].ptr);
    }
    dropalloc_free(other, theirs.ptr);
    dropalloc_destroy(other);
    dropalloc_destroy(r);
  }
}
