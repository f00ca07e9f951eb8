// What the attack15 tests share: block contents and answers by name.
#pragma once

#include <cstddef>
#include <string>

#include "allocator/dropalloc.h"

namespace attack15 {

inline std::string name(dropalloc::block_state s) { return dropalloc::to_string(s); }

// Contents with no zero byte, different per seed: every page has a witness.
inline void fill(void* p, std::size_t n, int seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>((seed + i * 131) % 251 + 1);
}

}  // namespace attack15
