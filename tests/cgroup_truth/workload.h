// The main drop-truth workload: threads write blocks through every seal path
// into droppable memory, keep a working set several times the cgroup limit
// sealed, free and revisit old blocks, reseal, rewrite what was dropped, and
// check each other's blocks; every block check() calls intact is compared
// with its checksum (see oracle.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "tests/cgroup_truth/tally.h"

namespace dropalloc::truth {

struct workload_options {
  std::uint64_t blocks = 1000000;       // fresh blocks to write, at least
  int threads = 2;
  std::size_t slots_per_thread = 49152; // the working set: ~100 MB a thread
  std::size_t steps_per_round = 20000;  // fresh blocks per thread between cross-checks
  std::size_t seal_all_batch = 1024;    // blocks written before each seal_all(), which visits them all
  std::size_t cross_checks = 4096;      // another thread's blocks checked per round
};

// Runs in the process that sits in the cgroup. Prints every wrong block.
tally run_workload(const workload_options& options);

}  // namespace dropalloc::truth
