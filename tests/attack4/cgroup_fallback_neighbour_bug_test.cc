// fallback_neighbour_seal_bug_test under real memory pressure: a child memory
// cgroup (64 MiB), the private fallback, 16 MiB of 3000-byte blocks (class
// 3072, back to back, straddling pages), every other run of 64 blocks sealed,
// then ordinary allocations that push the cgroup over its limit. README: "written
// but unsealed blocks are ordinary memory that the kernel never drops". The
// sealed blocks' seal() gave MADV_FREE to whole pages, their unsealed
// neighbours' bytes included, and the kernel reclaimed those pages: unsealed
// blocks read zeros, and check() still said `unsealed` (no loss reported).
// Fixed: in the fallback a shared page is advised only while every other
// block on it is sealed.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/cgroup_child.h"

using dropalloc::block_state;

namespace {

constexpr std::uint64_t kLimit = 64ull << 20;
constexpr std::size_t kSize = 3000;

bool sealed_run(std::size_t block) { return (block / 64) % 2 == 1; }

unsigned char byte_of(std::size_t block, std::size_t k) { return static_cast<unsigned char>((block * 7 + k) % 251 + 1); }

struct outcome {
  std::uint64_t unsealed = 0, unsealed_changed = 0, sealed = 0, sealed_dropped = 0, sealed_wrong_intact = 0;
  int backing = -1;
};

outcome run() {
  outcome r;
  dropalloc::resource_options o;
  o.force_fallback = true;
  o.background_decay = false;
  dropalloc::droppable_resource res(o);
  r.backing = static_cast<int>(res.arena_backing());
  std::vector<dropalloc::block_ref> blocks;
  for (std::size_t i = 0; i < (16u << 20) / 3072; ++i) {
    dropalloc::block_ref b = res.allocate_block(kSize, 8);
    auto* p = static_cast<unsigned char*>(b.ptr);
    for (std::size_t k = 0; k < kSize; ++k) p[k] = byte_of(i, k);
    blocks.push_back(b);
  }
  // Sealed in runs of 64 blocks (48 pages), every other run: the pages inside
  // a sealed run may go, those a run shares with an unsealed neighbour stay.
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (sealed_run(i)) res.seal(blocks[i]);
  }
  // Pressure: ordinary memory beyond what the limit leaves.
  std::vector<void*> hog;
  for (int mib = 0; mib < 48; ++mib) {
    void* m = std::malloc(1 << 20);
    std::memset(m, 1, 1 << 20);
    hog.push_back(m);
  }
  std::vector<unsigned char> copy(kSize);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    std::memcpy(copy.data(), blocks[i].ptr, kSize);
    bool same = true;
    for (std::size_t k = 0; k < kSize && same; ++k) same = copy[k] == byte_of(i, k);
    block_state s = res.check(blocks[i]);
    if (!sealed_run(i)) {
      ++r.unsealed;
      if (!same) ++r.unsealed_changed;
    } else {
      ++r.sealed;
      if (s == block_state::dropped) ++r.sealed_dropped;
      if (s == block_state::intact && !same) ++r.sealed_wrong_intact;
    }
  }
  for (void* m : hog) std::free(m);
  return r;
}

}  // namespace

TEST_CASE("fallback under a cgroup limit: unsealed neighbours of sealed blocks are never dropped") {
  auto run_ = dropalloc::testing::run_in_child_cgroup<outcome>("dropalloc-a4-fallback", kLimit, run);
  if (!dropalloc::testing::child_ran_cleanly(run_)) return;
  const outcome& r = run_.result;
  REQUIRE(r.backing == static_cast<int>(dropalloc::backing::private_fallback));
  MESSAGE("sealed " << r.sealed << " (dropped " << r.sealed_dropped << "), unsealed " << r.unsealed
                    << " (changed " << r.unsealed_changed << ")");
  CHECK(r.sealed_wrong_intact == 0);
  CHECK_MESSAGE(r.unsealed_changed == 0, "unsealed blocks in private memory lost their data");
}
