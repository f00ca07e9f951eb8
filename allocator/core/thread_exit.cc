#include "allocator/core/thread_exit.h"

extern "C" {
// glibc 2.18+ (stdlib/cxa_thread_atexit_impl.c). dso_symbol names the object
// registering, so that it stays loaded until the call has run.
int __cxa_thread_atexit_impl(void (*fn)(void*), void* arg, void* dso_symbol);
extern void* __dso_handle;
}

namespace dropalloc::core {

bool call_at_thread_exit(void (*fn)(void*), void* arg) noexcept {
  return __cxa_thread_atexit_impl(fn, arg, &__dso_handle) == 0;
}

}  // namespace dropalloc::core
