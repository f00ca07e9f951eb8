// A thread whose only allocator calls are the frees glibc makes while the
// thread exits (after its key destructors ran: a detached thread frees the
// thread-local storage of other threads' cached stacks there) registers its
// cache table too late for its exit handler to run. Such tables (with their
// tags) must be handed back once the thread is gone: by the next threads'
// first allocations (two looks each) and by malloc_trim(). Reader slots must
// not be kept at all: a thread's first read sections borrow one. dropalloc
// is this program's malloc (cc_test(malloc = "//allocator:malloc")), so
// those frees are ours.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <malloc.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "allocator/core/grace.h"
#include "tests/thread_tables.h"

namespace {

using dropalloc_test::tables_on_registry;
using dropalloc_test::threads_alive;

// Detached threads cannot be joined: wait until the kernel has none left
// but the main thread (the BUILD target turns off the background purger).
void wait_for_single_thread() {
  std::size_t n = dropalloc_test::wait_for_single_thread();
  if (n != 1) {
    std::printf("threads alive: %zu\n", n);
    system("ls -l /proc/$PPID/task >&2; cat /proc/$PPID/task/*/comm >&2");
  }
  REQUIRE(n == 1);
}

// Rounds of kThreads detached threads that allocate nothing; the number started.
constexpr int kThreads = 8;
int run_detached_rounds(int rounds) { return dropalloc_test::run_detached_rounds(rounds, kThreads); }

}  // namespace

TEST_CASE("detached threads that only free while exiting leave no table, tag or reader slot") {
  // The main thread's table, and its reader slot for life, exist before the
  // counts: its first 32 read sections borrow a slot, and the frees of
  // threads_alive() in the waits below make more than that.
  for (int i = 0; i < 64; ++i) std::free(std::malloc(32));
  wait_for_single_thread();
  const std::size_t tables_before = tables_on_registry();
  const std::uint32_t slots_before = dropalloc::core::grace_internal::slots_taken();
  constexpr int kRounds = 3000;
  const int started = run_detached_rounds(kRounds);
  wait_for_single_thread();
  const std::size_t tables_left = tables_on_registry();
  const std::uint32_t slots_after = dropalloc::core::grace_internal::slots_taken();
  // A thread that allocates looks at two tables; malloc_trim at every one.
  for (int i = 0; i < 4; ++i) std::thread([] { std::free(std::malloc(100)); }).join();
  const std::size_t tables_after_threads = tables_on_registry();
  malloc_trim(0);
  const std::size_t tables_after_trim = tables_on_registry();
  std::printf(
      "%d detached threads: tables on the registry %zu -> %zu (%zu after 4 more threads, %zu after "
      "malloc_trim), reader slots taken %u -> %u\n",
      started, tables_before, tables_left, tables_after_threads, tables_after_trim, slots_before, slots_after);
  CHECK(started > kRounds * kThreads / 2);
  CHECK(slots_after == slots_before);
  CHECK(tables_after_threads <= tables_left);
  CHECK(tables_after_trim == tables_before);
}

TEST_CASE("in a forked child, the forking thread keeps its table and exited threads' tables are handed back") {
  std::free(std::malloc(32));
  wait_for_single_thread();
  std::fflush(stdout);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::size_t before = tables_on_registry();
    run_detached_rounds(500);
    for (int i = 0; i < 4; ++i) std::thread([] { std::free(std::malloc(100)); }).join();
    // Every look skips the forking thread's own table: it still serves.
    void* p = std::malloc(48);
    std::free(p);
    for (int i = 0; i < 2000 && threads_alive() > 1; ++i) usleep(500);
    malloc_trim(0);
    const std::size_t after = tables_on_registry();
    std::printf("forked child: tables on the registry %zu -> %zu after 4000 detached threads and malloc_trim\n",
                before, after);
    std::fflush(stdout);
    _exit(after == before && before == 1 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
