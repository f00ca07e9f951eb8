#include "tests/cgroup_truth/launder.h"

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/cgroup_truth/content.h"
#include "tests/cgroup_truth/oracle.h"

namespace dropalloc::truth {
namespace {

struct sealed_block {
  block_ref ref;
  std::uint64_t seed = 0, sum = 0;
};

// Random contents only: every page carries a witness, so every drop counts.
std::uint64_t random_seed(std::uint64_t i) {
  std::uint64_t seed = mix(i);
  while (pattern_of(seed) != pattern::random) seed = mix(seed);
  return seed;
}

void count(droppable_resource& res, const std::vector<sealed_block>& blocks, std::size_t size,
           launder_counts* out) {
  for (const sealed_block& b : blocks) {
    switch (judge(res, b.ref.ptr, b.ref.generation, size, b.sum, res.check(b.ref.ptr, b.ref.generation))) {
      case ok: ++out->intact; break;
      case wrong: ++out->wrong; break;
      case dropped: ++out->dropped; break;
      case unsealed: ++out->unsealed; break;
      default: ++out->bad; break;
    }
  }
}

}  // namespace

launder_result run_launder(std::uint64_t total_bytes, std::size_t size, bool count_before) {
  launder_result r;
  droppable_resource res;
  std::vector<sealed_block> blocks;
  std::vector<unsigned char> data(size);
  for (std::uint64_t i = 0; i < total_bytes / size; ++i) {
    sealed_block b{res.allocate_block(size), random_seed(i), 0};
    fill(b.seed, size, data.data());
    b.sum = checksum(data.data(), size);
    // Written and sealed, then read back: a page zeroed before the seal is
    // sealed as zeros, so the block is written again until it reads whole.
    bool whole = false;
    for (int attempt = 0; attempt < 8 && !whole; ++attempt) {
      std::memcpy(b.ref.ptr, data.data(), size);
      whole = judge(res, b.ref.ptr, b.ref.generation, size, b.sum, res.seal(b.ref.ptr)) == ok;
      if (!whole) ++r.lost_before_seal;
    }
    if (!whole) {
      res.deallocate(b.ref.ptr, size);
      continue;
    }
    blocks.push_back(b);
  }
  r.blocks = blocks.size();
  if (count_before) count(res, blocks, size, &r.before);
  r.sealed_by_seal_all = res.seal_all();
  count(res, blocks, size, &r.after);
  return r;
}

}  // namespace dropalloc::truth
