// The lock of the os and core layers: a pthread mutex that never throws.
//
// std::mutex reports a failed lock by throwing std::system_error, which ties
// every object using it to the C++ runtime library; libdropalloc.so loads none
// (see allocator/BUILD, NO_CXX_RUNTIME_COPTS). A lock here fails only on
// misuse (EINVAL, EDEADLK): that aborts instead. Constant-initialised, so a
// global mutex is usable before any constructor runs (the malloc shim takes
// locks before main).
#pragma once

#include <pthread.h>

#include <cstdlib>

namespace dropalloc::core {

class mutex {
 public:
  constexpr mutex() noexcept = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  void lock() noexcept {
    if (pthread_mutex_lock(&m_) != 0) abort();
  }
  bool try_lock() noexcept { return pthread_mutex_trylock(&m_) == 0; }
  void unlock() noexcept { pthread_mutex_unlock(&m_); }

 private:
  pthread_mutex_t m_ = PTHREAD_MUTEX_INITIALIZER;
};

// std::lock_guard's job, for core::mutex (std::unique_lock's lock() can throw).
class lock_guard {
 public:
  explicit lock_guard(mutex& m) noexcept : m_(m) { m_.lock(); }
  lock_guard(const lock_guard&) = delete;
  lock_guard& operator=(const lock_guard&) = delete;
  ~lock_guard() { m_.unlock(); }

 private:
  mutex& m_;
};

}  // namespace dropalloc::core
