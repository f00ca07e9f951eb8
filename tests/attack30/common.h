// Helpers for attack round 30 (tests/attack30/README.md).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstring>

#include "allocator/core/heap_internal.h"
#include "allocator/core/mutex.h"
#include "allocator/core/thread_cache.h"
#include "tests/attack29/common.h"

namespace attack30 {

using attack29::kSlow;  // fewer rounds under a sanitizer

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

}  // namespace attack30
