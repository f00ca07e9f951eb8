// The C API (allocator/dropalloc_c.h): a thin layer over core::heap, one heap
// per resource, exactly as droppable_resource uses it.
#include <errno.h>

#include <new>

#include "allocator/core/heap.h"
#include "allocator/dropalloc_c.h"
#include "allocator/os/os.h"
#include "allocator/core/stats_report.h"
#include "allocator/shim/c_stats.h"

struct dropalloc_resource {
  explicit dropalloc_resource(const dropalloc::core::heap_options& options) : heap(options) {}
  dropalloc::core::heap heap;
};

namespace {

dropalloc_state to_c(dropalloc::block_state s) {
  switch (s) {
    case dropalloc::block_state::intact: return DROPALLOC_INTACT;
    case dropalloc::block_state::unsealed: return DROPALLOC_UNSEALED;
    case dropalloc::block_state::dropped: return DROPALLOC_DROPPED;
    case dropalloc::block_state::stale: return DROPALLOC_STALE;
    case dropalloc::block_state::foreign: return DROPALLOC_FOREIGN;
  }
  return DROPALLOC_FOREIGN;
}

}  // namespace

extern "C" {

#define DROPALLOC_EXPORT __attribute__((visibility("default")))

DROPALLOC_EXPORT dropalloc_resource* dropalloc_create(unsigned flags) {
  if ((flags & ~(DROPALLOC_FORCE_FALLBACK | DROPALLOC_NO_THREAD_CACHE)) != 0) {
    errno = EINVAL;
    return nullptr;
  }
  dropalloc::core::heap_options options;
  options.os = (flags & DROPALLOC_FORCE_FALLBACK) != 0 ? &dropalloc::os::fallback_os() : nullptr;
  options.thread_cache = (flags & DROPALLOC_NO_THREAD_CACHE) == 0;
  options.name = "C API resource";
  // std::nothrow_t{}, not std::nothrow: that object lives in the C++ runtime
  // library, which libdropalloc.so does not load.
  auto* r = new (std::nothrow_t{}) dropalloc_resource(options);
  if (r == nullptr) errno = ENOMEM;
  return r;
}

DROPALLOC_EXPORT void dropalloc_destroy(dropalloc_resource* r) { delete r; }

DROPALLOC_EXPORT dropalloc_block dropalloc_alloc(dropalloc_resource* r, size_t bytes, size_t alignment) {
  dropalloc_block b = {nullptr, 0};
  if (r == nullptr) {
    errno = EINVAL;
    return b;
  }
  if (alignment == 0) alignment = 16;
  dropalloc::core::alloc_error err = dropalloc::core::alloc_error::none;
  b.ptr = r->heap.allocate(bytes, alignment, &err);
  if (b.ptr == nullptr) {
    errno = err == dropalloc::core::alloc_error::bad_alignment ? EINVAL : ENOMEM;
    return b;
  }
  b.generation = r->heap.generation(b.ptr);
  return b;
}

DROPALLOC_EXPORT void dropalloc_free(dropalloc_resource* r, void* p) {
  if (r != nullptr && p != nullptr) r->heap.deallocate(p);
}

DROPALLOC_EXPORT dropalloc_state dropalloc_seal(dropalloc_resource* r, void* p) {
  if (r == nullptr) return DROPALLOC_FOREIGN;
  return to_c(r->heap.seal(p));
}

DROPALLOC_EXPORT dropalloc_state dropalloc_seal_rewritten(dropalloc_resource* r, void* p) {
  if (r == nullptr) return DROPALLOC_FOREIGN;
  return to_c(r->heap.seal_rewritten(p));
}

DROPALLOC_EXPORT size_t dropalloc_seal_many(dropalloc_resource* r, void* const* blocks, size_t n,
                                             dropalloc_state* states) {
  if (r == nullptr || (blocks == nullptr && n != 0)) {
    for (size_t i = 0; states != nullptr && i < n; ++i) states[i] = DROPALLOC_FOREIGN;
    return 0;
  }
  // Through a buffer on the stack, a batch at a time: one barrier per batch.
  constexpr size_t kBatch = 128;
  dropalloc::block_state got[kBatch];
  size_t intact = 0;
  for (size_t from = 0; from < n; from += kBatch) {
    const size_t k = n - from < kBatch ? n - from : kBatch;
    intact += r->heap.seal_many(blocks + from, k, got);
    for (size_t j = 0; states != nullptr && j < k; ++j) states[from + j] = to_c(got[j]);
  }
  return intact;
}

DROPALLOC_EXPORT size_t dropalloc_seal_all(dropalloc_resource* r) { return r != nullptr ? r->heap.seal_all() : 0; }

DROPALLOC_EXPORT dropalloc_state dropalloc_check(dropalloc_resource* r, const void* p, uint64_t generation) {
  if (r == nullptr) return DROPALLOC_FOREIGN;
  return to_c(r->heap.check(p, generation));
}

DROPALLOC_EXPORT int dropalloc_is_intact(dropalloc_resource* r, dropalloc_block b) {
  return r != nullptr && r->heap.check(b.ptr, b.generation) == dropalloc::block_state::intact ? 1 : 0;
}

DROPALLOC_EXPORT uint64_t dropalloc_generation(dropalloc_resource* r, const void* p) {
  return r != nullptr ? r->heap.generation(p) : 0;
}

DROPALLOC_EXPORT size_t dropalloc_usable_size(dropalloc_resource* r, const void* p) {
  return r != nullptr ? r->heap.usable_size(p) : 0;
}

DROPALLOC_EXPORT int dropalloc_get_stats(dropalloc_resource* r, dropalloc_stats* out) {
  if (r == nullptr || out == nullptr) return EINVAL;
  dropalloc::shim::to_c_stats(r->heap.stats(), 0, out);
  return 0;
}

namespace {
int print_report(const dropalloc::core::heap* h, int fd, unsigned flags) {
  if (fd < 0 || (flags & ~DROPALLOC_STATS_CLASSES) != 0) return EINVAL;
  dropalloc::core::fd_sink sink{fd};
  unsigned f = (flags & DROPALLOC_STATS_CLASSES) != 0 ? dropalloc::core::kStatsPerClass : 0;
  dropalloc::core::write_stats_report(h, f, dropalloc::core::write_to_fd, &sink);
  return sink.error;
}
}  // namespace

DROPALLOC_EXPORT int dropalloc_stats_print(int fd, unsigned flags) { return print_report(nullptr, fd, flags); }

DROPALLOC_EXPORT int dropalloc_resource_stats_print(dropalloc_resource* r, int fd, unsigned flags) {
  return r != nullptr ? print_report(&r->heap, fd, flags) : EINVAL;
}

DROPALLOC_EXPORT void dropalloc_trim(dropalloc_resource* r) {
  if (r != nullptr) r->heap.trim();
}

DROPALLOC_EXPORT int dropalloc_drop_for_testing(dropalloc_resource* r, void* p, size_t bytes) {
  return r != nullptr ? r->heap.drop_for_testing(p, bytes) : EINVAL;
}

DROPALLOC_EXPORT const char* dropalloc_state_name(dropalloc_state s) {
  switch (s) {
    case DROPALLOC_INTACT: return "intact";
    case DROPALLOC_UNSEALED: return "unsealed";
    case DROPALLOC_DROPPED: return "dropped";
    case DROPALLOC_STALE: return "stale";
    case DROPALLOC_FOREIGN: return "foreign";
  }
  return "?";
}

// Without the malloc shim in the link, the shim's entry points still exist
// and say so; libdropalloc.so's strong definitions (shim/malloc.cc) win.
DROPALLOC_EXPORT __attribute__((weak)) int dropalloc_shim_active(void) { return 0; }
DROPALLOC_EXPORT __attribute__((weak)) int dropalloc_malloc_stats(dropalloc_stats* out) {
  return out == nullptr ? EINVAL : ENOSYS;
}

}  // extern "C"
