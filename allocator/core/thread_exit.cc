#include "allocator/core/thread_exit.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>

extern "C" {
// glibc 2.18+ (stdlib/cxa_thread_atexit_impl.c). dso_symbol names the object
// registering, so that it stays loaded until the call has run.
int __cxa_thread_atexit_impl(void (*fn)(void*), void* arg, void* dso_symbol);
extern void* __dso_handle;
}

namespace dropalloc::core {

namespace {

constexpr pthread_key_t kNoKey = ~pthread_key_t{0};
constexpr pthread_key_t kKeysWithoutAllocation = 32;  // their values live in the thread descriptor
std::atomic<pthread_key_t> g_exit_key{kNoKey};
std::atomic<void (*)(void*)> g_exit_fn{nullptr};

void run_exit_fn(void* arg) {
  if (void (*fn)(void*) = g_exit_fn.load(std::memory_order_acquire)) fn(arg);
}

// glibc calls a key's destructor with nothing keeping its code loaded (a
// __cxa_thread_atexit_impl registration names its object, which stays
// loaded until the registration has run; a key does not), and
// pthread_key_delete does not wait for a destructor already running: a
// dlclose of this object while threads exit would let them run unmapped
// code. So the object stays loaded for good, as if linked with -z nodelete,
// before its key can be set: this also covers the reader slots' key
// (grace.cc). True if it stays loaded: it is the program itself, or the
// loader took the flag.
bool keep_this_object_loaded() noexcept {
  Dl_info info;
  link_map* map = nullptr;
  if (dladdr1(reinterpret_cast<void*>(&run_exit_fn), &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) == 0 ||
      map == nullptr) {
    return false;
  }
  if (map->l_name == nullptr || map->l_name[0] == '\0') return true;  // the program: never unloaded
  return dlopen(map->l_name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE) != nullptr;  // never closed
}

__attribute__((constructor)) void make_exit_key() {
  pthread_key_t key;
  if (pthread_key_create(&key, run_exit_fn) != 0) return;
  if (key >= kKeysWithoutAllocation || !keep_this_object_loaded()) {
    pthread_key_delete(key);  // setting it could allocate, or unload it: the other registration serves
    return;
  }
  g_exit_key.store(key, std::memory_order_release);
}

// Unloaded (a plugin linking dropalloc statically, dlclose'd): no exiting
// thread may call into code about to be unmapped.
__attribute__((destructor)) void drop_exit_key() {
  pthread_key_t key = g_exit_key.exchange(kNoKey, std::memory_order_acq_rel);
  if (key != kNoKey) pthread_key_delete(key);
}

bool register_with_glibc(void (*fn)(void*), void* arg) noexcept {
  return __cxa_thread_atexit_impl(fn, arg, &__dso_handle) == 0;
}

}  // namespace

bool call_at_thread_exit(void (*fn)(void*), void* arg) noexcept {
  g_exit_fn.store(fn, std::memory_order_release);
  const pthread_key_t key = g_exit_key.load(std::memory_order_acquire);
  const bool main_thread = gettid() == getpid();
  if (key != kNoKey && pthread_setspecific(key, arg) == 0) return !main_thread || register_with_glibc(fn, arg);
  // No key: only the main thread registers with glibc. Another thread's first
  // call may be one of the frees glibc makes as the thread exits, under its
  // stack-cache lock, and __cxa_thread_atexit_impl takes the loader's lock,
  // which dlopen holds while it takes the stack-cache lock (a deadlock, every
  // run, with a library that loads objects with static TLS). The thread's
  // table is found by a look after the thread exits instead.
  return main_thread && register_with_glibc(fn, arg);
}

}  // namespace dropalloc::core
