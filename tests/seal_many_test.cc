// seal_many(): seal() of a batch of blocks with one translation barrier, in
// the pmr front end (pointers and handles) and the C API.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/dropalloc_c.h"
#include "allocator/os/fake_os.h"
#include "tests/fake_resource.h"
#include "tests/pattern.h"

using dropalloc::backing;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

using dropalloc::testing::fill;

namespace {

constexpr std::size_t kPage = 4096;

const backing kBackings[] = {backing::droppable, backing::private_fallback};

}  // namespace

TEST_CASE("seal_many seals a batch of written blocks with one barrier, and each reads intact") {
  for (backing bk : kBackings) {
    CAPTURE(static_cast<int>(bk));
    dropalloc::os::fake_os os;
    droppable_resource res(dropalloc::testing::on_fake_os(os, bk));
    std::vector<block_ref> refs;
    std::vector<void*> ptrs;
    for (std::size_t i = 0; i < 300; ++i) {
      const std::size_t size = i % 3 == 0 ? 24 : i % 3 == 1 ? 700 : 3 * kPage + 5;  // sharing, straddling, multi-page
      refs.push_back(res.allocate_block(size));
      fill(refs.back().ptr, size, static_cast<std::uint32_t>(i));
      ptrs.push_back(refs.back().ptr);
    }
    std::vector<block_state> answers(ptrs.size(), block_state::foreign);
    const int settles_before = os.settles.load();
    CHECK(res.seal_many(ptrs, answers) == ptrs.size());
    CHECK(os.settles.load() - settles_before == 1);
    for (std::size_t i = 0; i < refs.size(); ++i) {
      CAPTURE(i);
      CHECK(answers[i] == block_state::intact);
      // A first seal keeps the allocation's generation, as seal() does.
      CHECK(res.generation(refs[i].ptr) == refs[i].generation);
      CHECK(res.check(refs[i].ptr, refs[i].generation) == block_state::intact);
    }
    // Drops after the batch are seen, block by block.
    CHECK(res.drop_for_testing(refs[1].ptr, 1) == 0);
    CHECK(res.check(refs[1].ptr, refs[1].generation) == block_state::dropped);
    CHECK(res.drop_for_testing(static_cast<char*>(refs[2].ptr) + 2 * kPage, 1) == 0);
    CHECK(res.check(refs[2].ptr, refs[2].generation) == block_state::dropped);
    CHECK(res.check(refs[5].ptr, refs[5].generation) == block_state::intact);
    for (std::size_t i = 0; i < refs.size(); ++i) res.deallocate(refs[i].ptr, 1);
  }
}

TEST_CASE("seal_many answers for every kind of pointer what seal() would") {
  for (backing bk : kBackings) {
    CAPTURE(static_cast<int>(bk));
    dropalloc::os::fake_os os;
    droppable_resource res(dropalloc::testing::on_fake_os(os, bk));
    droppable_resource other;
    block_ref sealed_before = res.allocate_block(100);
    fill(sealed_before.ptr, 100, 1);
    REQUIRE(res.seal(sealed_before.ptr) == block_state::intact);
    fill(sealed_before.ptr, 100, 2);  // rewritten since: a re-seal gives a new generation
    block_ref lost = res.allocate_block(kPage);
    fill(lost.ptr, kPage, 3);
    REQUIRE(res.seal(lost.ptr) == block_state::intact);
    REQUIRE(res.drop_for_testing(lost.ptr, 1) == 0);
    block_ref fresh = res.allocate_block(64);
    fill(fresh.ptr, 64, 4);
    void* freed = res.allocate(64, 8);
    res.deallocate(freed, 64, 8);
    void* theirs = other.allocate(64, 8);
    int local = 0;
    void* const batch[] = {
        sealed_before.ptr,                    // sealed -> sealed, new generation
        lost.ptr,                             // sealed, lost a page -> dropped, stays dropped
        fresh.ptr,                            // live -> sealed
        fresh.ptr,                            // again: now a re-seal
        nullptr,                              // foreign
        theirs,                               // another resource's: foreign
        &local,                               // not ours at all: foreign
        static_cast<char*>(fresh.ptr) + 8,    // interior: foreign
        freed,                                // freed: stale
    };
    const block_state want[] = {block_state::intact,  block_state::dropped, block_state::intact,
                                block_state::intact,  block_state::foreign, block_state::foreign,
                                block_state::foreign, block_state::foreign, block_state::stale};
    block_state got[9];
    CHECK(res.seal_many(batch, got) == 3);
    for (int i = 0; i < 9; ++i) {
      CAPTURE(i);
      CHECK(got[i] == want[i]);
    }
    CHECK(res.check(sealed_before.ptr, sealed_before.generation) == block_state::stale);
    CHECK(res.check(sealed_before.ptr, res.generation(sealed_before.ptr)) == block_state::intact);
    CHECK(res.check(lost.ptr, lost.generation) == block_state::dropped);
    CHECK(res.check(fresh.ptr, fresh.generation) == block_state::stale);  // re-sealed in the batch
    CHECK(res.check(fresh.ptr, res.generation(fresh.ptr)) == block_state::intact);
    // An empty batch makes no barrier and seals nothing.
    const int settles_before = os.settles.load();
    CHECK(res.seal_many(std::span<void* const>{}, std::span<block_state>{}) == 0);
    CHECK(os.settles.load() == settles_before);
    other.deallocate(theirs, 64, 8);
    res.deallocate(sealed_before.ptr, 100);
    res.deallocate(lost.ptr, kPage);
    res.deallocate(fresh.ptr, 64);
  }
}

TEST_CASE("seal_many with too few answers throws and seals nothing") {
  droppable_resource res;
  block_ref a = res.allocate_block(64);
  fill(a.ptr, 64, 5);
  void* const batch[] = {a.ptr, a.ptr};
  block_state one[1];
  CHECK_THROWS_AS(res.seal_many(batch, one), std::invalid_argument);
  CHECK(res.check(a.ptr, a.generation) == block_state::unsealed);
  block_ref refs[] = {a, a};
  CHECK_THROWS_AS(res.seal_many(std::span<block_ref>(refs), one), std::invalid_argument);
  CHECK(res.check(a.ptr, a.generation) == block_state::unsealed);
  res.deallocate(a.ptr, 64);
}

TEST_CASE("seal_many without a barrier takes every block as lost, as seal() does") {
  dropalloc::os::fake_os os;
  droppable_resource res(dropalloc::testing::on_fake_os(os, backing::droppable));
  os.settle_error = ENOMEM;
  block_ref a = res.allocate_block(64), b = res.allocate_block(2 * kPage);
  fill(a.ptr, 64, 6);
  fill(b.ptr, 2 * kPage, 7);
  void* const batch[] = {a.ptr, b.ptr};
  block_state got[2];
  CHECK(res.seal_many(batch, got) == 0);
  CHECK(got[0] == block_state::dropped);
  CHECK(got[1] == block_state::dropped);
  CHECK(res.check(a.ptr, a.generation) == block_state::dropped);
  CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
  os.settle_error = 0;
  res.deallocate(a.ptr, 64);
  res.deallocate(b.ptr, 2 * kPage);
}

TEST_CASE("seal_many of blocks dropped right after their witnesses: each is reported dropped") {
  // The private fallback advises a block as soon as it is sealed; the fake
  // zeroes what it is asked to advise, as a drop right after the seal would.
  dropalloc::os::fake_os os;
  droppable_resource res(dropalloc::testing::on_fake_os(os, backing::private_fallback));
  std::vector<void*> ptrs;
  for (int i = 0; i < 8; ++i) {
    ptrs.push_back(res.allocate(3 * kPage, kPage));
    fill(ptrs.back(), 3 * kPage, static_cast<std::uint32_t>(i + 10));
  }
  os.drop_on_seal = true;
  std::vector<block_state> got(ptrs.size());
  CHECK(res.seal_many(ptrs, got) == 0);
  for (std::size_t i = 0; i < ptrs.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == block_state::dropped);
  }
  os.drop_on_seal = false;
  for (void* p : ptrs) res.deallocate(p, 3 * kPage, kPage);
}

TEST_CASE("seal_many through handles: stale handles seal nothing, the rest name what was sealed") {
  droppable_resource res;
  std::vector<block_ref> refs;
  for (int i = 0; i < 300; ++i) {  // more than one batch of the handle overload
    refs.push_back(res.allocate_block(48));
    fill(refs.back().ptr, 48, static_cast<std::uint32_t>(i));
  }
  REQUIRE(res.seal(refs[7]) == block_state::intact);
  const block_ref before_reseal = refs[7];
  fill(refs[7].ptr, 48, 99);
  block_ref stale = refs[9];
  stale.generation += 1000;  // not the block's: must seal nothing
  block_ref no_generation{refs[10].ptr, 0};
  std::vector<block_ref> batch = refs;
  batch.push_back(stale);
  batch.push_back(no_generation);
  batch.push_back(block_ref{});
  std::vector<block_state> got(batch.size());
  CHECK(res.seal_many(std::span<block_ref>(batch), got) == refs.size());
  for (std::size_t i = 0; i < refs.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == block_state::intact);
    CHECK(res.check(batch[i].ptr, batch[i].generation) == block_state::intact);
  }
  CHECK(batch[7].generation != before_reseal.generation);  // re-sealed: the handle moved with it
  CHECK(res.check(before_reseal.ptr, before_reseal.generation) == block_state::stale);
  CHECK(got[refs.size()] == block_state::stale);
  CHECK(batch[refs.size()].generation == stale.generation);
  CHECK(got[refs.size() + 1] == block_state::stale);
  CHECK(got[refs.size() + 2] == block_state::foreign);
  for (const block_ref& r : refs) res.deallocate(r.ptr, 48);
}

TEST_CASE("dropalloc_seal_many: the C API, NULL arguments included") {
  dropalloc_resource* r = dropalloc_create(0);
  REQUIRE(r != nullptr);
  std::vector<dropalloc_block> blocks;
  std::vector<void*> ptrs;
  for (int i = 0; i < 200; ++i) {  // more than one batch of the C API
    blocks.push_back(dropalloc_alloc(r, 40, 0));
    fill(blocks.back().ptr, 40, static_cast<std::uint32_t>(i));
    ptrs.push_back(blocks.back().ptr);
  }
  ptrs.push_back(nullptr);
  std::vector<dropalloc_state> states(ptrs.size(), DROPALLOC_INTACT);
  CHECK(dropalloc_seal_many(r, ptrs.data(), ptrs.size(), states.data()) == 200);
  for (int i = 0; i < 200; ++i) {
    CAPTURE(i);
    CHECK(states[i] == DROPALLOC_INTACT);
    CHECK(dropalloc_is_intact(r, blocks[i]) == 1);
  }
  CHECK(states[200] == DROPALLOC_FOREIGN);
  fill(blocks[0].ptr, 40, 77);
  CHECK(dropalloc_seal_many(r, ptrs.data(), 1, nullptr) == 1);  // no states wanted
  dropalloc_state s[2] = {DROPALLOC_INTACT, DROPALLOC_INTACT};
  CHECK(dropalloc_seal_many(nullptr, ptrs.data(), 2, s) == 0);
  CHECK(s[0] == DROPALLOC_FOREIGN);
  CHECK(s[1] == DROPALLOC_FOREIGN);
  s[0] = DROPALLOC_INTACT;
  CHECK(dropalloc_seal_many(r, nullptr, 1, s) == 0);
  CHECK(s[0] == DROPALLOC_FOREIGN);
  CHECK(dropalloc_seal_many(r, nullptr, 0, nullptr) == 0);
  for (void* p : ptrs) dropalloc_free(r, p);
  dropalloc_destroy(r);
}
