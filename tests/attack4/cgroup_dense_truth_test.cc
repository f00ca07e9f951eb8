// Real drops in a 64 MiB child memory cgroup, droppable arenas: four times the
// limit written as blocks that straddle pages (3000 B to 20 KB classes, back to
// back), each sealed and verified right after its seal (a page lost before the
// seal is not the check's business); every third block's neighbour freed and
// allocated again, written and sealed while pressure goes on. At the end, and
// once in between, every block is copied out and checked: a block reading
// intact must match its contents exactly.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/cgroup_child.h"

using dropalloc::block_ref;
using dropalloc::block_state;

namespace {

constexpr std::uint64_t kLimit = 64ull << 20;
constexpr std::size_t kSizes[] = {3000, 4200, 5000, 9000, 20000};

void expected(std::uint64_t id, std::size_t n, unsigned char* out) {
  std::uint64_t x = id * 0x9e3779b97f4a7c15ull + 7;
  for (std::size_t k = 0; k < n; k += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::uint64_t w = (id % 5 == 0 && k < n / 2) ? 0 : x;  // some portions all zeros
    std::memcpy(out + k, &w, n - k < 8 ? n - k : 8);
  }
}

struct outcome {
  std::uint64_t blocks = 0, intact = 0, dropped = 0, wrong = 0, presealed_loss = 0;
};

outcome run() {
  outcome r;
  dropalloc::droppable_resource res;
  struct rec {
    block_ref ref;
    std::size_t n;
    std::uint64_t id;
  };
  std::vector<rec> recs;
  std::vector<unsigned char> want(32768), copy(32768);
  std::uint64_t next_id = 1, bytes = 0;
  auto make = [&](std::size_t n) {
    rec c{res.allocate_block(n, 8), n, next_id++};
    expected(c.id, n, want.data());
    std::memcpy(c.ref.ptr, want.data(), n);
    res.seal(c.ref);
    if (std::memcmp(c.ref.ptr, want.data(), n) != 0) {
      ++r.presealed_loss;
      res.drop_for_testing(c.ref.ptr, n);  // mark it lost for good: re-checks see dropped
      res.check(c.ref);
    }
    return c;
  };
  auto verify = [&](const rec& c) {
    std::memcpy(copy.data(), c.ref.ptr, c.n);
    block_state s = res.check(c.ref);
    if (s == block_state::intact) {
      ++r.intact;
      expected(c.id, c.n, want.data());
      if (std::memcmp(copy.data(), want.data(), c.n) != 0) ++r.wrong;
    } else if (s == block_state::dropped) {
      ++r.dropped;
    }
  };
  std::size_t k = 0;
  while (bytes < 4 * kLimit) {
    std::size_t n = kSizes[k++ % 5];
    recs.push_back(make(n));
    bytes += n;
    // Churn a neighbour: replace an earlier block of the same size.
    if (recs.size() > 10 && k % 3 == 0) {
      rec& old = recs[recs.size() - 6];
      verify(old);
      res.deallocate(old.ref.ptr, old.n);
      old = make(old.n);
    }
    if (k == 20000) {
      for (const rec& c : recs) verify(c);
    }
  }
  for (const rec& c : recs) verify(c);
  r.blocks = recs.size();
  return r;
}

}  // namespace

TEST_CASE("real drops of dense blocks: intact means the sealed bytes") {
  auto run_ = dropalloc::testing::run_in_child_cgroup<outcome>("dropalloc-a4-dense", kLimit, run);
  if (!dropalloc::testing::child_ran_cleanly(run_)) return;
  const outcome& r = run_.result;
  MESSAGE("blocks " << r.blocks << ", intact reads " << r.intact << ", dropped reads " << r.dropped
                    << ", lost before their seal " << r.presealed_loss << ", wrong " << r.wrong);
  CHECK(r.wrong == 0);
  CHECK(r.dropped > 0);  // the kernel did drop
  CHECK(r.intact > 0);
}
