// Helpers for attack round 30 (tests/attack30/README.md).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstring>

#include "allocator/core/heap_internal.h"
#include "allocator/core/mutex.h"
#include "allocator/core/thread_cache.h"

namespace attack30 {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr int kSlow = 1;
#else
inline constexpr int kSlow = 0;
#endif

// Tables on the registry's list (live threads, and threads whose table was
// never retired) and on the spare list.
struct tables_count {
  std::size_t live = 0, spare = 0, spare_resident = 0, spare_count = 0;
  unsigned tags_in_use = 0;
};

inline tables_count count_tables() {
  tables_count out;
  auto& r = dropalloc::core::internal::registry();
  dropalloc::core::lock_guard g(r.lock);
  for (auto* t = r.tables; t != nullptr; t = t->next) ++out.live;
  for (auto* t = r.spare_tables; t != nullptr; t = t->next) ++out.spare;
  out.spare_resident = r.spare_resident_bytes;
  out.spare_count = r.spare_count;
  out.tags_in_use = r.tags_in_use;
  return out;
}

inline std::size_t rss_kib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0, res = 0;
  if (f != nullptr) {
    if (std::fscanf(f, "%lu %lu", &pages, &res) != 2) res = 0;
    std::fclose(f);
  }
  return res * 4;
}

}  // namespace attack30
