// Deadlock (lock-order inversion) in a program whose malloc is dropalloc's
// (cc_binary(malloc = "//allocator:malloc"), the documented way to link the
// shim into one program) and that also uses a droppable_resource.
//
// check_all() holds the resource heap's segments lock and calls check(),
// which opens a read section. On a thread's first read section, claim_slot()
// registers its exit handler with __cxa_thread_atexit_impl, which calloc()s a
// record: with dropalloc as malloc, that allocation sets up the thread's cache
// table and takes the registry lock. So: segments lock -> registry lock.
// The process-wide statistics (print_stats, visit_heaps) and the purger take
// registry -> segments lock (the documented order). A new thread whose first
// call is check_all() and a thread printing process statistics deadlock.
#include <doctest/doctest.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <ctime>
#include <ostream>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

void* first_call_is_check_all(void* arg) {
  (void)static_cast<dropalloc::droppable_resource*>(arg)->check_all();
  return nullptr;
}

// How long a thread may take before it counts as stuck (ATTACK9_WAIT_S, to
// attach a debugger; 5 s by default).
int wait_seconds() {
  const char* v = std::getenv("ATTACK9_WAIT_S");
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : 5;
}

// Runs fresh threads whose first call is check_all(); true if one of them
// has not returned after 5 s. `between` runs before each thread.
template <class F>
bool fresh_check_all_threads(dropalloc::droppable_resource& r, int n, F between, int* done) {
  for (*done = 0; *done < n; ++*done) {
    between();
    pthread_t t;
    if (pthread_create(&t, nullptr, first_call_is_check_all, &r) != 0) return false;
    timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += wait_seconds();
    if (pthread_timedjoin_np(t, nullptr, &deadline) == ETIMEDOUT) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("a new thread's check_all() and process statistics never deadlock") {
  dropalloc::droppable_resource r;
  std::vector<dropalloc::block_ref> keep;
  for (int i = 0; i < 256; ++i) keep.push_back(r.allocate_block(64 + (i % 8) * 1024));
  for (auto& b : keep) (void)r.seal(b);
  std::atomic<bool> stop{false};
  std::thread stats([&] {
    std::ostream null(nullptr);
    while (!stop.load()) dropalloc::print_stats(null, true);
  });
  int iterations = 0;
  bool stuck = false;
  for (; iterations < 4000 && !stuck; ++iterations) {
    pthread_t t;
    REQUIRE(pthread_create(&t, nullptr, first_call_is_check_all, &r) == 0);
    timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    int rc = pthread_timedjoin_np(t, nullptr, &deadline);
    if (rc == ETIMEDOUT) stuck = true;
  }
  if (stuck) {
    std::fprintf(stderr,
                 "deadlock at iteration %d: a new thread's check_all() has not returned in 5 s "
                 "(stats thread printing process statistics at the same time)\n",
                 iterations);
    std::fflush(stderr);
  }
  CHECK_FALSE(stuck);
  if (stuck) std::_Exit(1);  // the two threads can never be joined
  stop.store(true);
  stats.join();
  MESSAGE(iterations << " threads, no deadlock");
  for (auto& b : keep) r.deallocate(b);
}

// The same inversion with no statistics call at all: the background purger
// (on by default, DROPALLOC_DECAY_MS = 100) holds the registry lock while it
// decays each heap, which takes the heap's segments lock. A freed large block
// (cached) gives the resource decay work.
TEST_CASE("a new thread's check_all() and the background purger never deadlock") {
  dropalloc::droppable_resource r;
  std::vector<dropalloc::block_ref> keep;
  for (int i = 0; i < 64; ++i) keep.push_back(r.allocate_block(64 + (i % 8) * 1024));
  for (auto& b : keep) (void)r.seal(b);
  int done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  bool stuck = false;
  while (!stuck && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    stuck = fresh_check_all_threads(
        r, 200,
        [&] {
          // A large block freed: cached, decay work for the purger.
          dropalloc::block_ref b = r.allocate_block(300 * 1024);
          r.deallocate(b);
        },
        &done);
  }
  if (stuck) {
    std::fprintf(stderr, "deadlock: a new thread's check_all() has not returned in 5 s (no statistics call; "
                         "the background purger runs)\n");
    std::fflush(stderr);
  }
  CHECK_FALSE(stuck);
  if (stuck) std::_Exit(1);
  for (auto& b : keep) r.deallocate(b);
}

// A third counterpart: fork(). Its prepare handler (prefork_all) takes the
// registry, then every heap's class locks and segments lock.
TEST_CASE("a new thread's check_all() and fork() never deadlock") {
  dropalloc::droppable_resource r;
  std::vector<dropalloc::block_ref> keep;
  for (int i = 0; i < 64; ++i) keep.push_back(r.allocate_block(64 + (i % 8) * 1024));
  for (auto& b : keep) (void)r.seal(b);
  std::atomic<bool> stop{false};
  std::thread forker([&] {
    while (!stop.load()) {
      pid_t pid = fork();
      if (pid == 0) _exit(0);
      if (pid > 0) waitpid(pid, nullptr, 0);
    }
  });
  int done = 0;
  bool stuck = fresh_check_all_threads(r, 3000, [] {}, &done);
  if (stuck) {
    std::fprintf(stderr, "deadlock at iteration %d: a new thread's check_all() has not returned in %d s "
                         "(another thread forking)\n", done, wait_seconds());
    std::fflush(stderr);
  }
  CHECK_FALSE(stuck);
  if (stuck) std::_Exit(1);
  stop.store(true);
  forker.join();
  for (auto& b : keep) r.deallocate(b);
}
