// What the attack17 workloads share: block contents, sizes, run length and
// an owner's model of one block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "allocator/dropalloc.h"

namespace attack17 {

using dropalloc::block_ref;

// Contents with no zero byte, different per seed: every page has a witness.
inline void fill(unsigned char* b, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 11;
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    b[i] = static_cast<unsigned char>((x >> (8 * (i % 8))) | 1);
  }
}

// Sizes whose blocks share pages in every way a page can be shared.
inline std::size_t pick_size(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return 8 + rng() % 120;    // many per page
    case 1: return 3000;               // class 3072: straddles
    case 2: return 2000 + rng() % 48;  // about two per page
    case 3: return 5000 + rng() % 100; // straddles, some with a page of their own
    case 4: return 12000;              // middle pages of its own
    default: return 600 + rng() % 200;
  }
}

// How long a workload runs: MODEL_SECONDS, else 6 s.
inline double seconds() {
  const char* s = std::getenv("MODEL_SECONDS");
  return s != nullptr ? std::atof(s) : 6.0;
}

// One owner's block and what it must hold.
struct owned {
  block_ref b{nullptr, 0};
  std::size_t n = 0;
  std::vector<unsigned char> want;
  enum { unsealed, sealed, unknown } model = unsealed;
};

}  // namespace attack17
