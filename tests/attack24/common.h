// Shared by the attack round's tests.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdlib>
#include <new>

#include "allocator/dropalloc.h"

namespace attack24 {

// How long a race runs: ATTACK24_SECONDS if set and positive, else `fallback`.
inline double race_seconds(double fallback) {
  const char* v = std::getenv("ATTACK24_SECONDS");
  const double s = v != nullptr ? std::atof(v) : fallback;
  return s > 0 ? s : fallback;
}

// A block of `size` bytes (over 4 GiB in these tests), or a null handle,
// with a message, where this machine cannot map one: the caller skips.
inline dropalloc::block_ref allocate_huge(dropalloc::droppable_resource& res, std::size_t size) {
  try {
    return res.allocate_block(size, 8);
  } catch (const std::bad_alloc&) {
    MESSAGE("could not map a block over 4 GiB here: skipped");
    return {};
  }
}

}  // namespace attack24
