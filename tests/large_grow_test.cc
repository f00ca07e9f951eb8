// heap::grow_large_in_place, realloc's growth of a large block without a
// copy: what it grows, what it refuses (leaving the block as it was), what a
// failed mremap or metadata map leaves, that no handle of an earlier life of
// the block reads intact afterwards, and readers on other threads (check,
// generation, usable_size) racing the growth, which must never crash and
// never answer for a life that is not there.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/pattern.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;
using dropalloc::testing::all_zero;
using dropalloc::testing::allocate_large;
using dropalloc::testing::fill;
using dropalloc::testing::holds;
using dropalloc::testing::with_os;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kLarge = 300 * 1024;  // above the largest class: a mapping of its own

// Grows p to `bytes`, retrying with fresh blocks when the address space after
// one is taken (another mapping may sit there): returns the block that grew,
// its first `keep` bytes filled with `seed` before the growth.
void* grown_block(core::heap& h, std::size_t keep, std::size_t bytes, std::size_t seed) {
  std::vector<void*> failed;
  void* got = nullptr;
  for (int i = 0; i < 8 && got == nullptr; ++i) {
    void* p = allocate_large(h, keep);
    fill(p, keep, seed);
    if (h.grow_large_in_place(p, bytes)) got = p;
    else failed.push_back(p);
  }
  for (void* p : failed) h.deallocate(p);
  REQUIRE_MESSAGE(got != nullptr, "no large block could grow in place in 8 tries");
  return got;
}

}  // namespace

TEST_CASE("a large block grows where it is: same address, its bytes kept, the new ones zero") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  void* p = grown_block(h, kLarge, 2 * kLarge + 100, 7);
  const std::size_t span = (2 * kLarge + 100 + kPage - 1) / kPage * kPage;
  CHECK(h.usable_size(p) == span);
  CHECK(holds(p, kLarge, 7));
  CHECK(all_zero(static_cast<char*>(p) + kLarge, span - kLarge));
  fill(p, span, 8);  // every new page is writable
  CHECK(holds(p, span, 8));
  CHECK(h.stats().blocks_live == 1);
  // Again from the grown size; the statistics follow the mapping.
  const std::uint64_t mapped = h.stats().bytes_mapped;
  if (h.grow_large_in_place(p, 3 * span)) {
    CHECK(h.usable_size(p) == 3 * span);
    CHECK(holds(p, span, 8));
    CHECK(h.stats().bytes_mapped == mapped + 2 * span);
  }
  const std::uint64_t refused = h.stats().misuse_refused;
  h.deallocate(p);
  CHECK(h.stats().misuse_refused == refused);
  CHECK(h.stats().blocks_live == 0);
  h.deallocate(p);  // a double free of the grown block is refused
  CHECK(h.stats().misuse_refused == refused + 1);
}

TEST_CASE("refused, with the block as it was: not a live, never-observed large block, or not growing") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  core::heap other(with_os(&fos));
  void* p = allocate_large(h, kLarge);
  fill(p, kLarge, 3);
  const std::size_t span = h.usable_size(p);
  core::alloc_error err = core::alloc_error::none;
  void* small = h.allocate(4096, 16, &err);
  REQUIRE(small != nullptr);
  int on_stack = 0;
  CHECK_FALSE(h.grow_large_in_place(nullptr, kLarge * 2));
  CHECK_FALSE(h.grow_large_in_place(p, 0));
  CHECK_FALSE(h.grow_large_in_place(p, span));      // not larger
  CHECK_FALSE(h.grow_large_in_place(p, kLarge / 2));  // smaller: realloc keeps it
  CHECK_FALSE(h.grow_large_in_place(p, core::kMaxRequest + 1));
  CHECK_FALSE(h.grow_large_in_place(small, kLarge * 2));  // a class block
  CHECK_FALSE(h.grow_large_in_place(static_cast<char*>(p) + kPage, kLarge * 2));  // interior
  CHECK_FALSE(h.grow_large_in_place(&on_stack, kLarge * 2));  // foreign
  CHECK_FALSE(other.grow_large_in_place(p, kLarge * 2));      // another heap's block
  CHECK(h.usable_size(p) == span);
  CHECK(holds(p, kLarge, 3));
  CHECK(fos.extends.load() == 0);
  // Observed (a generation handed out): a handle to this life may exist, and
  // growing would end the life under it.
  const std::uint64_t gen = h.generation(p);
  REQUIRE(gen != 0);
  CHECK_FALSE(h.grow_large_in_place(p, kLarge * 2));
  CHECK(h.generation(p) == gen);
  CHECK(h.check(p, gen) == block_state::unsealed);
  h.deallocate(p);
  // Freed (it sits in the large-mapping cache, free).
  CHECK_FALSE(h.grow_large_in_place(p, kLarge * 2));
  CHECK(h.usable_size(p) == 0);
  h.deallocate(small);
  CHECK(h.stats().misuse_refused == 0);
  CHECK(h.stats().blocks_live == 0);
}

TEST_CASE("a block in a reused mapping larger than its request grows within it, under the same header") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  void* big = allocate_large(h, 3 * kLarge);
  const std::size_t mapping = h.usable_size(big);
  h.deallocate(big);  // into the large-mapping cache, which serves requests down to a quarter of a mapping
  void* p = allocate_large(h, kLarge);
  REQUIRE(p == big);
  fill(p, kLarge, 4);
  const int maps = fos.metadata_maps.load();
  CHECK(h.grow_large_in_place(p, 2 * kLarge));  // what realloc asks: its usable size (the mapping's) says nothing
  CHECK(fos.metadata_maps.load() == maps);      // no new header
  CHECK(fos.extends.load() == 0);               // no mremap
  CHECK(h.usable_size(p) == mapping);
  CHECK(holds(p, kLarge, 4));
  fill(p, 2 * kLarge, 6);
  CHECK(holds(p, 2 * kLarge, 6));
  CHECK(h.stats().blocks_live == 1);
  CHECK_FALSE(h.grow_large_in_place(p, 2 * kLarge));  // not above its request now
  CHECK_FALSE(h.grow_large_in_place(p, kLarge));      // a shrink: realloc's own rule decides
  CHECK(h.usable_size(p) == mapping);
  // Past the mapping: the mapping itself grows, under a new header.
  if (h.grow_large_in_place(p, mapping + kPage)) {
    CHECK(fos.extends.load() == 1);
    CHECK(h.usable_size(p) == mapping + kPage);
    CHECK(holds(p, 2 * kLarge, 6));
  }
  const std::uint64_t refused = h.stats().misuse_refused;
  h.deallocate(p);
  CHECK(h.stats().blocks_live == 0);
  h.deallocate(p);  // a double free of the grown block is refused
  CHECK(h.stats().misuse_refused == refused + 1);
  // Observed: a handle to the life may exist, so it does not grow even within its mapping.
  void* q = allocate_large(h, 3 * kLarge);
  h.deallocate(q);
  void* r = allocate_large(h, kLarge);
  REQUIRE(r == q);
  const std::uint64_t gen = h.generation(r);
  REQUIRE(gen != 0);
  CHECK_FALSE(h.grow_large_in_place(r, 2 * kLarge));
  CHECK(h.generation(r) == gen);
  h.deallocate(r);
}

TEST_CASE("a failed mremap or metadata map leaves the block live, whole and freeable") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  void* p = allocate_large(h, kLarge);
  fill(p, kLarge, 5);
  const std::size_t span = h.usable_size(p);
  const int maps = fos.metadata_maps.load(), unmaps = fos.metadata_unmaps.load();

  fos.extend_error = ENOMEM;
  CHECK_FALSE(h.grow_large_in_place(p, 2 * kLarge));
  CHECK(fos.extends.load() == 1);
  CHECK(fos.metadata_maps.load() - maps == fos.metadata_unmaps.load() - unmaps);  // the new header went
  fos.extend_error = 0;
  CHECK(h.usable_size(p) == span);
  CHECK(holds(p, kLarge, 5));

  fos.fail_metadata_call = fos.metadata_maps.load() + 1;
  CHECK_FALSE(h.grow_large_in_place(p, 2 * kLarge));
  CHECK(fos.extends.load() == 1);  // no mremap without a header for the result
  CHECK(h.usable_size(p) == span);
  CHECK(holds(p, kLarge, 5));

  // Still the same live block: observed, sealed and checked as any other.
  const std::uint64_t gen = h.generation(p);
  CHECK(h.seal(p) == block_state::intact);
  CHECK(h.check(p, gen) == block_state::intact);
  h.deallocate(p);
  CHECK(h.stats().misuse_refused == 0);
  CHECK(h.stats().blocks_live == 0);
}

TEST_CASE("after a growth no handle of an earlier life at the address reads intact") {
  os::fake_os fos;
  core::heap h(with_os(&fos));
  // An earlier life, sealed and handed out, then freed: the mapping goes to
  // the large cache and comes back for the next request of its size.
  void* first = allocate_large(h, kLarge);
  fill(first, kLarge, 1);
  std::uint64_t old_gen = 0;
  REQUIRE(h.seal(first, &old_gen) == block_state::intact);
  REQUIRE(h.check(first, old_gen) == block_state::intact);
  h.deallocate(first);
  void* p = allocate_large(h, kLarge);
  if (p != first) {
    h.deallocate(p);
    MESSAGE("the cached mapping was not reused: nothing to test here");
    return;
  }
  fill(p, kLarge, 1);  // the same bytes the old handle vouched for
  if (!h.grow_large_in_place(p, 2 * kLarge)) {
    h.deallocate(p);
    MESSAGE("no room after the block: nothing to test here");
    return;
  }
  CHECK(h.check(p, old_gen) == block_state::stale);
  const std::uint64_t gen = h.generation(p);
  CHECK(gen > old_gen);
  REQUIRE(h.seal(p) == block_state::intact);
  CHECK(h.check(p, gen) == block_state::intact);
  CHECK(h.check(p, old_gen) == block_state::stale);
  h.deallocate(p);
  CHECK(h.check(p, gen) == block_state::stale);
}

TEST_CASE("readers on other threads racing growths: no crash, no answer for a life that is not there") {
  core::heap h(with_os(&os::ordinary_os()));
  // The block being grown, and the generation of a sealed life that ended
  // at the same address before it (0: none known). The same mapping comes
  // back from the large cache often, so most blocks have one.
  struct published {
    void* p = nullptr;
    std::uint64_t ended_gen = 0;
  };
  std::mutex m;
  published pub;
  std::atomic<bool> stop{false};
  std::atomic<long> grown{0}, refused{0}, bad{0}, probes{0};

  std::thread grower([&] {
    std::map<void*, std::uint64_t> ended;
    for (int round = 0; round < 300; ++round) {
      void* p = allocate_large(h, kLarge + static_cast<std::size_t>(round % 7) * kPage);
      std::size_t have = h.usable_size(p);
      fill(p, have, round);
      if (round % 3 == 0) {
        std::uint64_t g = 0;
        REQUIRE(h.seal(p, &g) == block_state::intact);
        h.deallocate(p);
        ended[p] = g;  // from here on every handle of that life reads stale
        continue;
      }
      {
        std::lock_guard lock(m);
        auto it = ended.find(p);
        pub = published{p, it == ended.end() ? 0 : it->second};
      }
      for (int step = 0; step < 3; ++step) {
        if (h.grow_large_in_place(p, have * 3 / 2)) {
          ++grown;
          if (!holds(p, have, round)) ++bad;
          have = h.usable_size(p);
          fill(p, have, round);
        } else {
          ++refused;
        }
      }
      {
        std::lock_guard lock(m);
        pub = published{};
      }
      h.deallocate(p);
      // The cache hands grown mappings back, ever larger, until they reach
      // the next arena 4 MiB on and cannot grow: start afresh now and then.
      if (round % 10 == 9) h.trim();
    }
    stop.store(true);
  });

  auto reader = [&] {
    while (!stop.load()) {
      published seen;
      {
        std::lock_guard lock(m);
        seen = pub;
      }
      if (seen.p == nullptr) continue;
      ++probes;
      // The block may grow, or be freed and its mapping reused, meanwhile:
      // any answer but one for a life that ended.
      if (seen.ended_gen != 0 && h.check(seen.p, seen.ended_gen) == block_state::intact) ++bad;
      const std::size_t n = h.usable_size(seen.p);
      if (n != 0 && n < kLarge) ++bad;  // only large blocks live here
    }
  };
  std::thread r1(reader), r2(reader);
  grower.join();
  r1.join();
  r2.join();
  MESSAGE("grown in place " << grown.load() << ", refused " << refused.load() << ", probes " << probes.load());
  CHECK(bad.load() == 0);
  CHECK(grown.load() > 0);
  CHECK(h.stats().blocks_live == 0);
  CHECK(h.stats().misuse_refused == 0);
}
