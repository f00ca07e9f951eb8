// Helpers for attack round 37 (tests/attack37/README.md): look at the
// registry of thread-cache tables from a test linked with the core.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstring>

#include "allocator/core/grace.h"
#include "allocator/core/heap_internal.h"
#include "allocator/core/mutex.h"
#include "allocator/core/thread_cache.h"
#include "tests/thread_tables.h"

namespace attack37 {

inline dropalloc::core::tc_table* my_table() { return dropalloc::core::t_cache_table; }

inline bool on_registry(const dropalloc::core::tc_table* x) {
  auto& r = dropalloc::core::internal::registry();
  dropalloc::core::lock_guard g(r.lock);
  for (auto* t = r.tables; t != nullptr; t = t->next) {
    if (t == x) return true;
  }
  return false;
}

inline bool on_spares(const dropalloc::core::tc_table* x) {
  auto& r = dropalloc::core::internal::registry();
  dropalloc::core::lock_guard g(r.lock);
  for (auto* t = r.spare_tables; t != nullptr; t = t->next) {
    if (t == x) return true;
  }
  return false;
}

using dropalloc_test::tables_on_registry;
using dropalloc_test::threads_alive;

// The futex word of a table's owner_alive robust mutex (glibc's layout):
// the owner's thread id, and FUTEX_OWNER_DIED once the kernel saw the owner
// exit holding it. Read only, so that no look is disturbed.
constexpr unsigned kOwnerDied = 0x40000000u, kTidMask = 0x3fffffffu;
inline unsigned owner_word(const dropalloc::core::tc_table* x) {
  return static_cast<unsigned>(__atomic_load_n(&x->owner_alive.__data.__lock, __ATOMIC_RELAXED));
}
inline int table_tid(const dropalloc::core::tc_table* x) {
  auto& r = dropalloc::core::internal::registry();
  dropalloc::core::lock_guard g(r.lock);
  return static_cast<int>(owner_word(x) & kTidMask);
}

// Tables on the registry list whose thread no longer exists (marked dead by
// the kernel, or whose owner's id is not in /proc/self/task).
inline std::size_t tables_of_gone_threads() {
  auto& r = dropalloc::core::internal::registry();
  dropalloc::core::lock_guard g(r.lock);
  std::size_t n = 0;
  for (auto* t = r.tables; t != nullptr; t = t->next) {
    const unsigned w = owner_word(t);
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/task/%u", w & kTidMask);
    if ((w & kOwnerDied) != 0 || (w & kTidMask) == 0 || access(path, F_OK) != 0) ++n;
  }
  return n;
}

}  // namespace attack37
