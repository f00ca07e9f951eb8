// The seal_all() laundering scenario: fill far more sealed blocks than the
// cgroup holds, count what check() says before seal_all(), call it, count
// again. seal_all() seals live blocks only; a sealed block whose pages the
// kernel dropped must not come out of it intact.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dropalloc::truth {

struct launder_counts {
  std::uint64_t intact = 0, dropped = 0, unsealed = 0, wrong = 0, bad = 0;
};

struct launder_result {
  std::uint64_t blocks = 0;            // sealed, and read back whole right after sealing
  std::uint64_t lost_before_seal = 0;  // rewrites needed because a page went before the seal
  std::uint64_t sealed_by_seal_all = 0;
  launder_counts before, after;        // before: all zero when not counted
};

// count_before: check every block before seal_all() (which marks lost ones
// dropped), or leave them sealed and unlooked-at until after it.
launder_result run_launder(std::uint64_t total_bytes, std::size_t block_bytes, bool count_before);

}  // namespace dropalloc::truth
