// Every replaceable C++ operator new and delete, served by the shim's heap.
// Sizes passed to sized delete are not trusted: the block knows its own size,
// so a wrong size (a program bug) cannot corrupt the heap.
#include <cstddef>
#include <new>

#include "allocator/shim/shim.h"

namespace {

using dropalloc::shim::alloc;
using dropalloc::shim::malloc_align;

inline std::size_t align_of(std::align_val_t a) {
  auto v = static_cast<std::size_t>(a);
  return v < dropalloc::shim::kMallocAlign ? dropalloc::shim::kMallocAlign : v;
}

// The standard's loop: on failure call the installed new-handler and retry;
// with no handler, throw std::bad_alloc.
[[gnu::noinline]] void* new_or_throw(std::size_t bytes, std::size_t alignment) {
  for (;;) {
    void* p = alloc(bytes, alignment);
    if (DROPALLOC_LIKELY(p != nullptr)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

// The nothrow forms run the same loop but answer nullptr where it would throw
// (including when the handler itself throws bad_alloc).
void* new_or_null(std::size_t bytes, std::size_t alignment) noexcept {
  for (;;) {
    void* p = alloc(bytes, alignment);
    if (DROPALLOC_LIKELY(p != nullptr)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) return nullptr;
    try {
      handler();
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
}

inline void delete_impl(void* p) noexcept {
  if (dropalloc::shim::try_release_cached(p) || p == nullptr) return;
  dropalloc::shim::release(p);
}

// The cached fast path inline; the standard's retry loop out of line.
inline void* new_fast(std::size_t bytes, std::size_t alignment) {
  if (void* p = dropalloc::shim::try_alloc_cached(bytes, alignment)) return p;
  return new_or_throw(bytes, alignment);
}

}  // namespace

#define DROPALLOC_EXPORT __attribute__((visibility("default")))

DROPALLOC_EXPORT void* operator new(std::size_t n) { return new_fast(n, malloc_align(n)); }
DROPALLOC_EXPORT void* operator new[](std::size_t n) { return new_fast(n, malloc_align(n)); }
DROPALLOC_EXPORT void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return new_or_null(n, malloc_align(n));
}
DROPALLOC_EXPORT void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return new_or_null(n, malloc_align(n));
}
DROPALLOC_EXPORT void* operator new(std::size_t n, std::align_val_t a) { return new_or_throw(n, align_of(a)); }
DROPALLOC_EXPORT void* operator new[](std::size_t n, std::align_val_t a) { return new_or_throw(n, align_of(a)); }
DROPALLOC_EXPORT void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return new_or_null(n, align_of(a));
}
DROPALLOC_EXPORT void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return new_or_null(n, align_of(a));
}

DROPALLOC_EXPORT void operator delete(void* p) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete[](void* p) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete(void* p, std::size_t) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete[](void* p, std::size_t) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete(void* p, std::align_val_t) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete[](void* p, std::align_val_t) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete(void* p, std::size_t, std::align_val_t) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { delete_impl(p); }
DROPALLOC_EXPORT void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  delete_impl(p);
}
DROPALLOC_EXPORT void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  delete_impl(p);
}
