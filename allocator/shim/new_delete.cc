// Every replaceable C++ operator new and delete, served by the shim's heap.
// Sizes passed to sized delete are not trusted: the block knows its own size,
// so a wrong size (a program bug) cannot corrupt the heap.
#include <dlfcn.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "allocator/shim/shim.h"

namespace {

using dropalloc::shim::alloc;
using dropalloc::shim::malloc_align;

inline std::size_t align_of(std::align_val_t a) {
  auto v = static_cast<std::size_t>(a);
  return v < dropalloc::shim::kMallocAlign ? dropalloc::shim::kMallocAlign : v;
}

// libdropalloc.so loads no C++ runtime (a preloaded C program would pay about
// 1 MiB for it), yet operator new must throw std::bad_alloc and honour the
// new-handler. Whoever calls operator new is C++ code, so libstdc++ is in the
// process by then: the rare failure path finds its functions by name. Their
// exception unwinds through the frames here, which need no clean-up (they
// hold no lock and own nothing) and carry unwind tables.
std::new_handler installed_new_handler() noexcept {
  using get_fn = std::new_handler (*)() noexcept;
  auto get = reinterpret_cast<get_fn>(dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv"));
  return get != nullptr ? get() : nullptr;
}

[[noreturn, gnu::noinline]] void throw_bad_alloc(std::size_t bytes) {
  using throw_fn = void (*)();
  auto raise = reinterpret_cast<throw_fn>(dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv"));
  if (raise != nullptr) raise();
  // Only a program that links the C++ runtime statically and exports none of
  // it gets here; it has no bad_alloc this library could throw.
  char msg[160];
  int len = snprintf(msg, sizeof msg,
                     "dropalloc: operator new(%zu) failed and no C++ runtime is loaded to throw "
                     "std::bad_alloc; aborting\n",
                     bytes);
  if (len > 0) (void)!write(2, msg, static_cast<std::size_t>(len) < sizeof msg ? len : sizeof msg - 1);
  abort();
}

// The standard's loop: on failure call the installed new-handler and retry;
// with no handler, throw std::bad_alloc.
[[gnu::noinline]] void* new_or_throw(std::size_t bytes, std::size_t alignment) {
  for (;;) {
    void* p = alloc(bytes, alignment);
    if (DROPALLOC_LIKELY(p != nullptr)) return p;
    std::new_handler handler = installed_new_handler();
    if (handler == nullptr) throw_bad_alloc(bytes);
    handler();
  }
}

// The nothrow forms answer nullptr where the loop above would throw, including
// when the handler itself throws bad_alloc. Catching that needs the C++
// runtime, so with a handler installed they hand the request to the runtime's
// own nothrow form (the next definition after this one, named by its mangled
// symbol), which catches around a call of the throwing form above.
void* new_or_null(std::size_t bytes, const char* runtime_form) noexcept {
  void* p = alloc(bytes, malloc_align(bytes));
  if (DROPALLOC_LIKELY(p != nullptr) || installed_new_handler() == nullptr) return p;
  using form_fn = void* (*)(std::size_t, const std::nothrow_t&) noexcept;
  auto next = reinterpret_cast<form_fn>(dlsym(RTLD_NEXT, runtime_form));
  return next != nullptr ? next(bytes, std::nothrow_t{}) : nullptr;
}

void* new_or_null(std::size_t bytes, std::align_val_t a, const char* runtime_form) noexcept {
  void* p = alloc(bytes, align_of(a));
  if (DROPALLOC_LIKELY(p != nullptr) || installed_new_handler() == nullptr) return p;
  using form_fn = void* (*)(std::size_t, std::align_val_t, const std::nothrow_t&) noexcept;
  auto next = reinterpret_cast<form_fn>(dlsym(RTLD_NEXT, runtime_form));
  return next != nullptr ? next(bytes, a, std::nothrow_t{}) : nullptr;
}

// Out of line, so that the inline fast paths save no registers for it.
[[gnu::noinline]] void delete_slow(void* p) noexcept {
  if (p != nullptr) dropalloc::shim::release(p);
}

inline void delete_impl(void* p) noexcept {
  if (dropalloc::shim::try_release_cached(p)) return;
  delete_slow(p);
}

// The cached fast path inline; the standard's retry loop out of line.
inline void* new_fast(std::size_t bytes, std::size_t alignment) {
  if (void* p = dropalloc::shim::try_alloc_cached(bytes, alignment)) return p;
  return new_or_throw(bytes, alignment);
}

}  // namespace

#define DROPALLOC_EXPORT __attribute__((visibility("default")))

// operator new(n) aligns as malloc does, so it shares malloc's class table.
DROPALLOC_EXPORT void* operator new(std::size_t n) {
  if (void* p = dropalloc::shim::try_malloc_cached(n)) return p;
  return new_or_throw(n, malloc_align(n));
}
DROPALLOC_EXPORT void* operator new[](std::size_t n) {
  if (void* p = dropalloc::shim::try_malloc_cached(n)) return p;
  return new_or_throw(n, malloc_align(n));
}
DROPALLOC_EXPORT void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return new_or_null(n, "_ZnwmRKSt9nothrow_t");
}
DROPALLOC_EXPORT void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return new_or_null(n, "_ZnamRKSt9nothrow_t");
}
DROPALLOC_EXPORT void* operator new(std::size_t n, std::align_val_t a) { return new_or_throw(n, align_of(a)); }
DROPALLOC_EXPORT void* operator new[](std::size_t n, std::align_val_t a) { return new_or_throw(n, align_of(a)); }
DROPALLOC_EXPORT void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return new_or_null(n, a, "_ZnwmSt11align_val_tRKSt9nothrow_t");
}
DROPALLOC_EXPORT void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return new_or_null(n, a, "_ZnamSt11align_val_tRKSt9nothrow_t");
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
