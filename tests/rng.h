// A small, fast pseudo-random generator for tests' random histories
// (splitmix64): the same seed gives the same history on every run.
#pragma once

#include <cstdint>

namespace dropalloc::testing {

struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool chance(unsigned percent) { return below(100) < percent; }
};

// The k-th seed derived from a run's base seed: the first number of the
// generator seeded with both, so that threads and rounds draw apart.
inline std::uint64_t derived_seed(std::uint64_t seed, std::uint64_t k) {
  rng r{seed * 0x100000001b3ull + k};
  return r.next();
}

}  // namespace dropalloc::testing
