// The allocation and free fast paths (heap::allocate_cached and
// heap::deallocate_cached, inline in allocator/core/heap.h), each compiled
// alone into a function of its own, at the optimisation the library ships
// with, for fastpath_budget_test.sh to count their instructions.
#include <cstddef>
#include <cstdint>

#include "allocator/core/heap.h"

extern "C" [[gnu::noinline, gnu::used]] void* dropalloc_probe_allocate(dropalloc::core::heap* h, std::size_t n) {
  return h->allocate_cached(n, 8);
}

// The shim's malloc path: its own class table, no alignment to compute.
extern "C" [[gnu::noinline, gnu::used]] void* dropalloc_probe_malloc(dropalloc::core::heap* h, std::size_t n) {
  return h->allocate_cached_class(dropalloc::core::malloc_class_for(n));
}

extern "C" [[gnu::noinline, gnu::used]] bool dropalloc_probe_free(dropalloc::core::heap* h, void* p) {
  return h->deallocate_cached(p);
}

int main(int argc, char**) {
  // Never true: keeps both functions referenced without running them.
  if (argc > 1000) return dropalloc_probe_allocate(nullptr, 8) != nullptr || dropalloc_probe_malloc(nullptr, 8) != nullptr ||
                          dropalloc_probe_free(nullptr, nullptr);
  return 0;
}
