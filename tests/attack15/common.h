// What the attack15 tests share: block contents and answers by name.
#pragma once

#include <cstddef>
#include <string>

#include "allocator/dropalloc.h"
#include "tests/pattern.h"

namespace attack15 {

inline std::string name(dropalloc::block_state s) { return dropalloc::to_string(s); }

// Contents with no zero byte, different per seed: every page has a witness.
using dropalloc::testing::fill;

}  // namespace attack15
