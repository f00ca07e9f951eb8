// A request that the allocation fast path never serves, for tests that need
// the allocation slow path (heap::allocate_slow: it re-biases a revoked tag)
// on every call: alignment 32, above the 16 the fast paths serve. Its class
// is thread-cached, so its free takes the fast path as any cached block's
// does. Both premises are checked here, so a change to the fast paths that
// would quietly take these tests off the slow path fails to compile instead.
#pragma once

#include <cstddef>

#include "allocator/core/size_class.h"
#include "allocator/core/thread_cache.h"

namespace dropalloc::testing {

inline constexpr std::size_t kSlowAllocBytes = 64 * 1024;
inline constexpr std::size_t kSlowAllocAlign = 32;

static_assert(core::small_class_for(kSlowAllocBytes, kSlowAllocAlign) == core::kNoClass,
              "the allocation fast path serves this request: pick one it does not");
static_assert(core::class_for(kSlowAllocBytes, kSlowAllocAlign) < core::kNumCachedClasses,
              "this request's class is not thread-cached: its free would take the slow path");

// One such allocation, freed at once: the calling thread's revoked tag is
// re-biased if it is due.
template <class Resource>
void slow_alloc_and_free(Resource& res) {
  res.deallocate(res.allocate(kSlowAllocBytes, kSlowAllocAlign), kSlowAllocBytes, kSlowAllocAlign);
}

}  // namespace dropalloc::testing
