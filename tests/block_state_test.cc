// Every transition of the block state machine (allocator/core/types.h,
// namespace state), one test case each, against forced drops whose effect we
// know. Small (one page, shares it) and multi-page blocks take different
// witness paths, so each case runs on both.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/pattern.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

using dropalloc::testing::all_zero;
using dropalloc::testing::fill;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kSizes[] = {64, 16 * 1024};

// A block of `size`, filled and sealed.
block_ref sealed_block(droppable_resource& res, std::size_t size, int seed) {
  block_ref b = res.allocate_block(size);
  fill(b.ptr, size, seed);
  REQUIRE(res.seal(b.ptr) == block_state::intact);
  return b;
}

}  // namespace

TEST_CASE("free -> live: allocate hands out an unsealed block with a generation") {
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref b = res.allocate_block(size);
    CHECK(b.generation != 0);
    CHECK(res.check(b.ptr, b.generation) == block_state::unsealed);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("live, sealed, dropped -> free: every handle of that life reads stale") {
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref live = res.allocate_block(size);
    block_ref sealed = sealed_block(res, size, 1);
    block_ref dropped = sealed_block(res, size, 2);
    res.drop_for_testing(dropped.ptr, size);
    REQUIRE(res.check(dropped.ptr, dropped.generation) == block_state::dropped);
    for (block_ref b : {live, sealed, dropped}) {
      res.deallocate(b.ptr, size);
      CHECK(res.check(b.ptr, b.generation) == block_state::stale);
      CHECK(res.seal(b.ptr) == block_state::stale);  // nothing to seal
      CHECK(res.generation(b.ptr) == 0);
    }
  }
}

TEST_CASE("live -> sealed by seal(): intact means the contents at the seal") {
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref b = sealed_block(res, size, 3);
    std::vector<unsigned char> copy(static_cast<unsigned char*>(b.ptr), static_cast<unsigned char*>(b.ptr) + size);
    CHECK(res.check(b.ptr, b.generation) == block_state::intact);
    CHECK(std::memcmp(b.ptr, copy.data(), size) == 0);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("live -> sealed by seal_all(), which leaves sealed and dropped blocks alone") {
  // The laundering a review found: seal a small and a multi-page block, drop a
  // page of each, write an unrelated block, seal_all(). It used to re-record
  // witnesses from the zeroed pages and call both blocks intact.
  droppable_resource res;
  block_ref small = sealed_block(res, 64, 4);
  block_ref big = sealed_block(res, 16 * 1024, 5);
  block_ref resealed = sealed_block(res, 16 * 1024, 6);
  REQUIRE(res.drop_for_testing(small.ptr, 64) == 0);
  REQUIRE(res.drop_for_testing(static_cast<char*>(big.ptr) + kPage, kPage) == 0);
  block_ref fresh = res.allocate_block(256);
  fill(fresh.ptr, 256, 7);
  CHECK(res.seal_all() == 1);  // only `fresh`
  CHECK(res.check(fresh.ptr, fresh.generation) == block_state::intact);
  CHECK(res.check(small.ptr, small.generation) == block_state::dropped);
  CHECK(res.check(big.ptr, big.generation) == block_state::dropped);
  CHECK(res.check(resealed.ptr, resealed.generation) == block_state::intact);
  // Once known dropped, seal_all() still leaves them dropped.
  CHECK(res.seal_all() == 0);
  CHECK(res.check(small.ptr, small.generation) == block_state::dropped);
  CHECK(res.check(big.ptr, big.generation) == block_state::dropped);
  auto sweep = res.check_all();
  CHECK(sweep.dropped == 2);
  CHECK(sweep.intact == 2);
}

TEST_CASE("sealed -> dropped when check() finds a zero witness; it stays dropped") {
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref b = sealed_block(res, size, 8);
    res.drop_for_testing(static_cast<char*>(b.ptr) + size - 1, 1);  // the last page
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    fill(static_cast<char*>(b.ptr) + size - 8, 8, 9);  // a write does not revive it
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("sealed -> dropped by a re-seal that finds the old seal lost a page") {
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref b = sealed_block(res, size, 10);
    // Dropped and never checked: the owner re-seals without knowing.
    res.drop_for_testing(b.ptr, 1);
    CHECK(res.seal(b.ptr) == block_state::dropped);
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    CHECK(all_zero(b.ptr, size < kPage ? size : kPage));
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("sealed -> sealed: a re-seal after a write vouches for the new contents") {
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref b = sealed_block(res, size, 11);
    fill(b.ptr, size, 12);
    const block_ref before = b;
    CHECK(res.seal(b) == block_state::intact);
    // New contents, new generation: a reader of the old ones reads stale.
    CHECK(b.generation == before.generation + 1);
    CHECK(res.check(before) == block_state::stale);
    std::vector<unsigned char> expect(size);
    fill(expect.data(), size, 12);
    CHECK(std::memcmp(b.ptr, expect.data(), size) == 0);
    CHECK(res.check(b.ptr, b.generation) == block_state::intact);
    // The new seal's witnesses are the ones checked.
    res.drop_for_testing(static_cast<char*>(b.ptr) + size - 1, 1);
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("dropped -> sealed only by write_and_seal; seal() and seal_all() leave it dropped") {
  // Whoever saw the loss (here: a check the owner did not make), a seal by an
  // owner who rewrote only part of the block must not certify the rest.
  droppable_resource res;
  for (std::size_t size : kSizes) {
    block_ref b = sealed_block(res, size, 13);
    res.drop_for_testing(b.ptr, size);
    REQUIRE(res.check(b.ptr, b.generation) == block_state::dropped);
    fill(b.ptr, size / 2, 14);  // a partial rewrite
    CHECK(res.seal(b.ptr) == block_state::dropped);
    CHECK(res.seal_all() == 0);
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    std::vector<unsigned char> src(size);
    fill(src.data(), size, 14);
    CHECK(res.write_and_seal(b, src.data(), size) == block_state::intact);
    CHECK(res.check(b.ptr, b.generation) == block_state::intact);
    CHECK(std::memcmp(b.ptr, src.data(), size) == 0);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("sealed -> dropped when write_and_seal cannot verify what it wrote") {
  // A drop right after the witnesses were recorded, every time: write_and_seal
  // must say dropped and leave the block so that no later check says intact.
  // (It used to leave the block sealed over zeros: later checks said intact.)
  dropalloc::os::fake_os os;
  os.reported_backing = dropalloc::backing::droppable;  // seal() advises shared pages
  dropalloc::resource_options options;
  options.os = &os;
  droppable_resource res(options);
  for (std::size_t size : kSizes) {
    std::vector<unsigned char> src(size);
    fill(src.data(), size, 15);
    block_ref b = res.allocate_block(size);
    os.drop_on_seal = true;
    // The advice is queued in droppable arenas: the drop comes when it is
    // given, by the seal_all() below at the latest. Until then it is intact.
    const block_state got = res.write_and_seal(b, src.data(), size);
    CHECK((got == block_state::dropped || got == block_state::intact));
    res.seal_all();
    os.drop_on_seal = false;
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    CHECK(res.seal_all() == 0);
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    // Written again with nothing dropping: intact, and the bytes are right.
    CHECK(res.write_and_seal(b, src.data(), size) == block_state::intact);
    CHECK(std::memcmp(b.ptr, src.data(), size) == 0);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("a drop when the seal's advice is given (at once or queued) reads dropped") {
  dropalloc::os::fake_os os;
  os.reported_backing = dropalloc::backing::droppable;  // seal() advises shared pages
  dropalloc::resource_options options;
  options.os = &os;
  droppable_resource res(options);
  for (std::size_t size : kSizes) {
    block_ref b = res.allocate_block(size);
    fill(b.ptr, size, 16);
    os.drop_on_seal = true;
    const block_state got = res.seal(b.ptr);  // dropped, or intact until its queued advice is given
    CHECK((got == block_state::dropped || got == block_state::intact));
    res.seal_all();
    os.drop_on_seal = false;
    CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
    res.deallocate(b.ptr, size);
  }
}

TEST_CASE("fork: the child's sealed blocks read dropped, the parent's stay intact") {
  droppable_resource res;
  if (res.arena_backing() != dropalloc::backing::droppable) {
    MESSAGE("arenas are not MAP_DROPPABLE here: wipe-on-fork of the fallback is tested in tests/hardening");
  }
  block_ref small = sealed_block(res, 64, 17);
  block_ref big = sealed_block(res, 16 * 1024, 18);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    bool ok = res.check(small.ptr, small.generation) == block_state::dropped &&
              res.check(big.ptr, big.generation) == block_state::dropped;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(res.check(small.ptr, small.generation) == block_state::intact);
  CHECK(res.check(big.ptr, big.generation) == block_state::intact);
}

TEST_CASE("trim: a handle into an arena that went back to the OS reads stale, never crashes") {
  dropalloc::os::fake_os os;
  dropalloc::resource_options options;
  options.os = &os;
  options.thread_cache = false;
  droppable_resource res(options);
  for (std::size_t size : {std::size_t{64}, std::size_t{16 * 1024}, std::size_t{8 << 20}}) {
    block_ref b = sealed_block(res, size, 19);
    res.deallocate(b.ptr, size);
    res.trim();
    CHECK(res.check(b.ptr, b.generation) == block_state::stale);
    CHECK(res.generation(b.ptr) == 0);
    CHECK(res.usable_size(b.ptr) == 0);
    CHECK_FALSE(res.owns(b.ptr));
  }
  CHECK(os.arena_unmaps.load() >= 3);
}

TEST_CASE("check() of what was never a block: foreign") {
  droppable_resource res;
  int local = 0;
  CHECK(res.check(nullptr, 0) == block_state::foreign);
  CHECK(res.check(nullptr, 1) == block_state::foreign);
  CHECK(res.check(&local, 0) == block_state::foreign);
  CHECK(res.seal(nullptr) == block_state::foreign);
  CHECK(res.seal(&local) == block_state::foreign);
  block_ref b = res.allocate_block(100);
  CHECK(res.check(static_cast<char*>(b.ptr) + 8, b.generation) == block_state::foreign);
  res.deallocate(b.ptr, 100);
}
