// Test contents: a byte pattern with no zero byte, different for each seed.
// Every 8-byte word of it can witness its page, so a drop (which reads as
// zeros) always shows, and two seeds' contents tell apart a rewrite.
#pragma once

#include <cstddef>

namespace dropalloc::testing {

inline void fill(void* p, std::size_t n, std::size_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>((seed + i * 131) % 251 + 1);
}

}  // namespace dropalloc::testing
