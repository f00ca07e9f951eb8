#include "allocator/core/thread_exit.h"

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

__attribute__((constructor)) void make_exit_key() {
  pthread_key_t key;
  if (pthread_key_create(&key, run_exit_fn) != 0) return;
  if (key >= kKeysWithoutAllocation) {
    pthread_key_delete(key);  // setting it could allocate: the other registration serves
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
  if (key == kNoKey || pthread_setspecific(key, arg) != 0) return register_with_glibc(fn, arg);
  return !main_thread || register_with_glibc(fn, arg);
}

}  // namespace dropalloc::core
