// The allocator's fork handlers come before every other library's.
//
// pthread_atfork() is a small wrapper, linked into each caller, around libc's
// __register_atfork(). glibc runs prepare handlers in the reverse order of
// their registration and parent and child handlers in that order, and a
// library the program links has its constructor run before a preloaded one.
// Its handlers would be registered first, so its prepare handler would run
// after ours had taken every allocator lock, and its parent and child
// handlers before ours released them: a malloc in any of them waited on a
// lock its own thread held. This definition comes first in the search order
// of every caller (preloaded, or linked into the program), registers ours if
// nobody has yet, then hands the call to libc's.
#include <dlfcn.h>
#include <errno.h>

#include <atomic>

#include "allocator/core/heap.h"

namespace {

using register_fn = int (*)(void (*)(), void (*)(), void (*)(), void*);

register_fn libc_register_atfork() noexcept {
  static std::atomic<register_fn> next{nullptr};
  register_fn f = next.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = reinterpret_cast<register_fn>(dlsym(RTLD_NEXT, "__register_atfork"));
    next.store(f, std::memory_order_release);
  }
  return f;
}

// Looked up before the core's constructor registers the handlers (a lower
// priority runs first within this object): dlsym takes the loader lock, and
// no lock may be taken while install_fork_handlers() has other threads wait
// (one of them may hold the loader lock, in a dlopen'ed constructor).
__attribute__((constructor(101))) void look_up_libc_register_atfork() { (void)libc_register_atfork(); }

}  // namespace

extern "C" __attribute__((visibility("default"))) int __register_atfork(void (*prepare)(), void (*parent)(),
                                                                        void (*child)(), void* dso_handle) {
  register_fn next = libc_register_atfork();  // first: not while others wait (above)
  dropalloc::core::install_fork_handlers();   // ours first (it calls back here)
  if (next == nullptr) return ENOMEM;  // no C library to register with: as pthread_atfork's failure
  return next(prepare, parent, child, dso_handle);
}
