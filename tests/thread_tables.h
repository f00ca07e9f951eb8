// The registry of thread-cache tables and the process's threads, as tests
// linked with the core see them (thread exit, reaping, fork).
#pragma once

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "allocator/core/heap_internal.h"
#include "allocator/core/mutex.h"
#include "allocator/core/thread_cache.h"

namespace dropalloc_test {

// Tables on the registry's list: one per thread that allocated and has not
// handed its table back (or had it taken by a look).
inline std::size_t tables_on_registry() {
  auto& r = dropalloc::core::internal::registry();
  dropalloc::core::lock_guard g(r.lock);
  std::size_t n = 0;
  for (auto* t = r.tables; t != nullptr; t = t->next) ++n;
  return n;
}

// Threads of this process but the allocator's own purger thread.
inline std::size_t threads_alive() {
  std::size_t n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char path[300], comm[64] = {};
      std::snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
      if (FILE* f = std::fopen(path, "r")) {
        if (std::fgets(comm, sizeof comm, f) == nullptr) comm[0] = 0;
        std::fclose(f);
      }
      n += std::strncmp(comm, "dropalloc-decay", 15) == 0 ? 0 : 1;
    }
    closedir(d);
  }
  return n;
}

// Detached threads cannot be joined: waits (up to 10 s) until the kernel has
// none left but the calling one; the number alive then.
inline std::size_t wait_for_single_thread() {
  for (int i = 0; i < 20000 && threads_alive() > 1; ++i) usleep(500);
  return threads_alive();
}

// Rounds of `per_round` detached threads that allocate nothing of their own
// (their only allocator calls are glibc's frees as they exit), each round
// started once the last has run; the number started.
inline std::atomic<int> g_idle_running{0};
inline void* idle_detached_thread(void*) {
  g_idle_running.fetch_sub(1, std::memory_order_release);
  return nullptr;
}
inline int run_detached_rounds(int rounds, int per_round) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int started = 0;
  for (int round = 0; round < rounds; ++round) {
    g_idle_running.store(per_round, std::memory_order_relaxed);
    for (int i = 0; i < per_round; ++i) {
      pthread_t t;
      if (pthread_create(&t, &attr, idle_detached_thread, nullptr) == 0) {
        ++started;
      } else {
        g_idle_running.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    while (g_idle_running.load(std::memory_order_acquire) > 0) sched_yield();
  }
  pthread_attr_destroy(&attr);
  return started;
}

}  // namespace dropalloc_test
