// Test contents: a byte pattern with no zero byte, different for each seed.
// Every 8-byte word of it can witness its page, so a drop (which reads as
// zeros) always shows, and two seeds' contents tell apart a rewrite. And the
// check that memory reads as zeros.
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

namespace dropalloc::testing {

inline void fill(void* p, std::size_t n, std::size_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>((seed + i * 131) % 251 + 1);
}

// Whether p's first n bytes hold what fill(p, n, seed) wrote.
inline bool holds(const void* p, std::size_t n, std::size_t seed) {
  std::vector<unsigned char> want(n);
  fill(want.data(), n, seed);
  return std::memcmp(p, want.data(), n) == 0;
}

// Whether p's first n bytes are all zero (as fresh or released pages read).
inline bool all_zero(const void* p, std::size_t n) {
  static const unsigned char zeros[4096] = {};
  const auto* b = static_cast<const unsigned char*>(p);
  while (n != 0) {
    const std::size_t k = n < sizeof zeros ? n : sizeof zeros;
    if (std::memcmp(b, zeros, k) != 0) return false;
    b += k;
    n -= k;
  }
  return true;
}

}  // namespace dropalloc::testing
