#include "allocator/core/purger.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <atomic>

#include "allocator/core/heap.h"

namespace dropalloc::core::purger {
namespace {

// pthread primitives, constant-initialised: usable before any constructor
// runs and never destroyed, so a heap may ask for the purger at any time.
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
bool g_pending = false;  // guarded by g_lock
bool g_shorter = false;  // a request lowered the tick during a sleep (guarded by g_lock)

std::atomic<bool> g_wanted{false};     // a request came while no thread ran
std::atomic<bool> g_running{false};    // a thread exists in this process
std::atomic<bool> g_failed{false};     // pthread_create refused; do not retry
std::atomic<std::uint64_t> g_tick_ms{1000};

// Sleeps one tick, or until a request lowers the tick: a heap with a long
// decay time asking first must not hold back one with a short decay time
// that asks during that sleep.
void sleep_tick() {
  pthread_mutex_lock(&g_lock);
  const std::uint64_t ms = g_tick_ms.load(std::memory_order_relaxed);
  timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);  // the condition variable's clock
  deadline.tv_sec += static_cast<time_t>(ms / 1000);
  deadline.tv_nsec += static_cast<long>(ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000;
  }
  g_shorter = false;
  while (!g_shorter && pthread_cond_timedwait(&g_wake, &g_lock, &deadline) == 0) {
  }
  pthread_mutex_unlock(&g_lock);
}

void* run(void*) {
  pthread_setname_np(pthread_self(), "dropalloc-decay");
  for (;;) {
    pthread_mutex_lock(&g_lock);
    while (!g_pending) pthread_cond_wait(&g_wake, &g_lock);
    g_pending = false;
    pthread_mutex_unlock(&g_lock);
    // Tick until nothing is left to decay, then wait for the next request.
    do {
      sleep_tick();
    } while (heap::decay_background_heaps());
  }
  return nullptr;
}

}  // namespace

void request(std::uint64_t tick_ms) noexcept {
  if (tick_ms == 0) tick_ms = 1;
  std::uint64_t cur = g_tick_ms.load(std::memory_order_relaxed);
  bool lowered = false;
  while (tick_ms < cur && !(lowered = g_tick_ms.compare_exchange_weak(cur, tick_ms, std::memory_order_relaxed))) {
  }
  pthread_mutex_lock(&g_lock);
  g_pending = true;
  if (lowered) g_shorter = true;
  pthread_cond_signal(&g_wake);
  pthread_mutex_unlock(&g_lock);
  if (!g_running.load(std::memory_order_acquire)) g_wanted.store(true, std::memory_order_relaxed);
}

void start_if_requested() noexcept {
  if (!g_wanted.load(std::memory_order_relaxed)) return;
  if (g_failed.load(std::memory_order_relaxed) || g_running.exchange(true, std::memory_order_acq_rel)) {
    g_wanted.store(false, std::memory_order_relaxed);
    return;
  }
  g_wanted.store(false, std::memory_order_relaxed);
  // Every signal blocked in the new thread: the program's handlers expect to
  // run on its own threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  int rc = pthread_create(&t, &attr, run, nullptr);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc != 0) {
    g_failed.store(true, std::memory_order_relaxed);
    g_running.store(false, std::memory_order_release);
  }
}

bool unavailable() noexcept { return g_failed.load(std::memory_order_relaxed); }

void forget_after_fork() noexcept {
  // Only the forking thread exists here; the lock may have been held by the
  // purger at the fork.
  g_lock = PTHREAD_MUTEX_INITIALIZER;
  g_wake = PTHREAD_COND_INITIALIZER;
  g_running.store(false, std::memory_order_relaxed);
  g_wanted.store(g_pending, std::memory_order_relaxed);
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer kills a child of a multi-threaded process that starts a
  // thread: there, decay happens on frees, as when a thread cannot be created.
  g_failed.store(true, std::memory_order_relaxed);
#endif
}

}  // namespace dropalloc::core::purger
