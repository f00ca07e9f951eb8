// Internal to the core's .cc files: what the heap's slow paths, the thread
// caches and the seal/check code share.
#pragma once

#include <time.h>

#include <cstdint>
#include "allocator/core/mutex.h"

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/os.h"

namespace dropalloc::core::internal {

// Heaps that own a thread-cache slot, and every thread's table.
struct registry_t {
  mutex lock;
  heap* heaps[kMaxCachedHeaps] = {};
  std::uint64_t ids[kMaxCachedHeaps] = {};
  tc_table* tables = nullptr;
  tc_table* reap_next = nullptr;  // on `tables`: where reap_exited_tables looks next
  // Tables of exited threads kept for the next new threads (at most
  // kSpareTables; linked by next): see thread_cache.cc, retire_table.
  tc_table* spare_tables = nullptr;
  std::uint32_t spare_count = 0;
  std::size_t spare_resident_bytes = 0;  // their caches' tc_table::kept_resident
  heap* all_heaps = nullptr;
  // Thread tags (state::kTagShift) held by live threads, bit t for tag t:
  // distinct while at most state::kTags threads have caches, shared beyond.
  std::uint32_t tags_in_use = 0;
  std::uint32_t next_shared_tag = 0;
};

registry_t& registry();

// Unmaps the tables (and their caches) kept from exited threads for new
// ones (thread_cache.cc): a heap's destruction hands them back with its
// caches (wait: takes the registry lock), and trim() with the heap's free
// memory if the registry lock is free (!wait): trim() may be called where
// it is held (from inside an OS call of a decay pass, which the purger
// makes under it), and the spares are only memory.
void release_spare_tables(bool wait) noexcept;

// Hands back the tables of threads that exited without handing them back
// themselves (thread_cache.cc says when that happens): each look takes the
// next table on the registry's list, from where the last look stopped, and
// asks whether its thread still holds it (tc_table::owner_alive). whole_list: look at every
// table once, from the first (trim()); else at kTablesLookedAtPerNewTable.
// wait false: stop whenever the registry lock is taken (see above).
void reap_exited_tables(const tc_table* mine, bool whole_list, bool wait) noexcept;

// A coarse monotonic clock for decay times.
inline std::uint64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

// The locks that serialise sealers of one block (seal_check.cc), all taken
// around fork().
void lock_seal_stripes() noexcept;
void unlock_seal_stripes() noexcept;  // constant-initialised, never destroyed before use ends

// A class's arena lists (avail, empty), guarded by the class lock.
inline void unlink(segment** head, segment* s) {
  if (s->prev != nullptr) s->prev->next = s->next; else *head = s->next;
  if (s->next != nullptr) s->next->prev = s->prev;
  s->next = s->prev = nullptr;
  s->list = kListNone;
}

inline void push(segment** head, segment* s, std::uint8_t list) {
  s->prev = nullptr;
  s->next = *head;
  if (*head != nullptr) (*head)->prev = s;
  *head = s;
  s->list = list;
}

// `live` and `bump` change under the class lock but are read without it by
// stats, seal_all and check_all: single-writer atomic stores keep that defined.
inline void set_counter(std::uint32_t* field, std::uint32_t value) {
  __atomic_store_n(field, value, __ATOMIC_RELAXED);
}
inline std::uint32_t read_counter(const std::uint32_t* field) {
  return __atomic_load_n(field, __ATOMIC_RELAXED);
}

// Seal advice for many blocks: their pages gathered into runs of adjacent
// pages of one arena, one os::seal_pages call per run. Blocks are added in
// address order (a block whose pages overlap or touch the run extends it).
// The caller keeps every added block's arena mapped until flush().
class seal_advice_runs {
 public:
  explicit seal_advice_runs(os::os_interface& os) noexcept : os_(os) {}
  seal_advice_runs(const seal_advice_runs&) = delete;
  seal_advice_runs& operator=(const seal_advice_runs&) = delete;

  void add(const segment* s, std::uint32_t idx) noexcept {
    const page_run run = block_pages(s, idx);
    std::byte* from = s->base + run.first * kPage;
    std::byte* to = s->base + (run.last + 1) * kPage;
    // The next arena need not begin where this one ends: a run stays in one.
    // Blocks come in address order, except that a queued entry's later
    // blocks may come before the next entry's own (which may lie between).
    if (s == arena_ && from <= to_ && to >= from_) {
      if (from < from_) from_ = from;
      if (to > to_) to_ = to;
      return;
    }
    flush();
    arena_ = s;
    from_ = from;
    to_ = to;
  }

  void flush() noexcept {
    if (arena_ != nullptr) os_.seal_pages(from_, static_cast<std::size_t>(to_ - from_));
    arena_ = nullptr;
  }

 private:
  os::os_interface& os_;
  const segment* arena_ = nullptr;  // nullptr: no run open
  std::byte* from_ = nullptr;
  std::byte* to_ = nullptr;
};

}  // namespace dropalloc::core::internal
