// Internal to the LD_PRELOAD shim: the process-wide heaps behind malloc and
// operator new, and the inline fast paths both front ends share.
//
// The general heap is built lazily in static storage on the first call, not by
// a static constructor: the dynamic loader, libc and other libraries call
// malloc long before any constructor of ours runs. It is never destroyed, so
// allocations during and after exit handlers keep working.
#pragma once

#include <errno.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <cstring>

#include "allocator/core/grace.h"
#include "allocator/core/heap.h"
#include "allocator/core/segment.h"

#define DROPALLOC_HIDDEN __attribute__((visibility("hidden")))

namespace dropalloc::shim {

// What malloc guarantees on x86-64 glibc: 16 bytes, except that a block of at
// most 8 bytes cannot hold anything needing more than 8.
inline constexpr std::size_t kMallocAlign = 16;

extern std::atomic<core::heap*> g_general DROPALLOC_HIDDEN;
// The experiment switch (DROPALLOC_DROPPABLE_RANGE): requests of
// [g_drop_min, g_drop_max] bytes go to g_droppable. Set once by the library
// constructor, before the program's own code runs.
extern core::heap* g_droppable DROPALLOC_HIDDEN;
extern std::size_t g_drop_min DROPALLOC_HIDDEN;
extern std::size_t g_drop_max DROPALLOC_HIDDEN;

core::heap* init_general() noexcept DROPALLOC_HIDDEN;
// alloc() out of line, for entry points whose fast path failed.
void* alloc_slow(std::size_t bytes, std::size_t alignment) noexcept DROPALLOC_HIDDEN;
void* alloc_droppable(std::size_t bytes, std::size_t alignment) noexcept DROPALLOC_HIDDEN;
void release_foreign(void* p) noexcept DROPALLOC_HIDDEN;
// Sets errno to ENOMEM; with DROPALLOC_VERBOSE=1 the first failure also says why.
void report_alloc_failure(std::size_t bytes, core::alloc_error err) noexcept DROPALLOC_HIDDEN;

inline core::heap* general() noexcept {
  core::heap* h = g_general.load(std::memory_order_acquire);
  return DROPALLOC_LIKELY(h != nullptr) ? h : init_general();
}

inline std::size_t malloc_align(std::size_t bytes) noexcept { return bytes <= 8 ? 8 : kMallocAlign; }

// The fast paths every entry point tries first: a small block from, or back
// to, the calling thread's cache of the general heap. nullptr / false means
// "take the full path" (alloc_slow / release), never an error; neither
// touches errno.
DROPALLOC_ALWAYS_INLINE void* try_alloc_cached(std::size_t bytes, std::size_t alignment) noexcept {
  core::heap* h = g_general.load(std::memory_order_acquire);
  if (DROPALLOC_UNLIKELY(h == nullptr || g_droppable != nullptr)) return nullptr;
  return h->allocate_cached(bytes, alignment);
}
// try_alloc_cached(bytes, malloc_align(bytes)), with malloc's own class table.
DROPALLOC_ALWAYS_INLINE void* try_malloc_cached(std::size_t bytes) noexcept {
  core::heap* h = g_general.load(std::memory_order_acquire);
  if (DROPALLOC_UNLIKELY(h == nullptr || g_droppable != nullptr)) return nullptr;
  return h->allocate_cached_class(core::malloc_class_for(bytes));
}
DROPALLOC_ALWAYS_INLINE bool try_release_cached(void* p) noexcept {
  core::heap* h = g_general.load(std::memory_order_acquire);
  return DROPALLOC_LIKELY(h != nullptr) && h->deallocate_cached(p);  // nullptr: false
}

// Whether requests of `bytes` go to the droppable heap
// (DROPALLOC_DROPPABLE_RANGE): every call that picks a heap by size asks this.
inline bool in_droppable_range(std::size_t bytes) noexcept {
  return DROPALLOC_UNLIKELY(g_droppable != nullptr) && bytes >= g_drop_min && bytes <= g_drop_max;
}

// nullptr with errno = ENOMEM on failure; errno untouched on success.
inline void* alloc(std::size_t bytes, std::size_t alignment) noexcept {
  if (in_droppable_range(bytes)) {
    return alloc_droppable(bytes, alignment);
  }
  core::alloc_error err;
  void* p = general()->allocate(bytes, alignment, &err);
  if (DROPALLOC_UNLIKELY(p == nullptr)) report_alloc_failure(bytes, err);
  return p;
}

// alloc() with the first `bytes` zeroed (calloc). Fresh mappings are already
// zero and are not touched, so a huge calloc does not fault in every page.
inline void* alloc_zeroed(std::size_t bytes, std::size_t alignment) noexcept {
  if (in_droppable_range(bytes)) {
    void* p = alloc_droppable(bytes, alignment);
    if (p != nullptr) memset(p, 0, bytes);
    return p;
  }
  core::alloc_error err;
  void* p = general()->allocate_zeroed(bytes, alignment, &err);
  if (DROPALLOC_UNLIKELY(p == nullptr)) report_alloc_failure(bytes, err);
  return p;
}

// p != nullptr. Blocks of either shim heap go back to their heap; a pointer in
// some other heap's arena (a droppable_resource block passed to free) goes to
// the general heap, which refuses and reports it; a pointer outside every
// arena is foreign (see release_foreign).
// The heap whose arena holds p: g_droppable's, else the general heap (which
// refuses what is not its own); nullptr when p is in no arena. In a read
// section: a bad pointer may name an arena being unmapped.
inline core::heap* heap_for(const void* p) noexcept {
  core::heap* h;
  {
    core::read_section reading;
    core::segment* s = core::segment_of(p);
    if (s == nullptr) return nullptr;
    h = s->owner;
  }
  return DROPALLOC_UNLIKELY(h != g_droppable || h == nullptr) ? general() : h;
}

// Frees p into h, its heap_for(p) (not nullptr): for callers that looked the
// heap up already.
inline void release_to(core::heap* h, void* p) noexcept {
  h->make_current();  // then deallocate() starts with the fast path (see heap::make_current)
  h->deallocate(p);
}

inline void release(void* p) noexcept {
  core::heap* h = heap_for(p);
  if (DROPALLOC_UNLIKELY(h == nullptr)) return release_foreign(p);
  release_to(h, p);
}

// Whether h is the heap that serves requests of `bytes`: realloc may keep a
// block where it is only then, or a block resized into or out of
// DROPALLOC_DROPPABLE_RANGE would keep the other heap's kind of memory.
// (Never true for h == nullptr: both candidates are non-null here.)
inline bool serves_size(const core::heap* h, std::size_t bytes) noexcept {
  return h == (in_droppable_range(bytes) ? g_droppable : general());
}

// realloc's growth of a large block where it is (heap::grow_large_in_place);
// h is heap_for(p); false: the caller copies. Only within the heap the new
// size belongs to: a block that must change heaps (DROPALLOC_DROPPABLE_RANGE:
// into or out of droppable memory) is copied, or it would keep the old heap's
// kind of memory.
inline bool grow_in_place(core::heap* h, void* p, std::size_t bytes) noexcept {
  if (!serves_size(h, bytes)) return false;
  return h->grow_large_in_place(p, bytes);
}

// Usable bytes of a live block of ours, 0 for anything else.
inline std::size_t usable(const void* p) noexcept {
  core::heap* h = heap_for(p);
  return h == nullptr ? 0 : h->usable_size(p);
}

}  // namespace dropalloc::shim
