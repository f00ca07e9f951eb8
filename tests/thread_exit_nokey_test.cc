// Without the allocator's thread-exit key: a program that made 32 pthread
// keys or more before the allocator's constructors ran leaves it none that
// can be set without allocating. No thread but the main one then registers
// an exit handler (registering one with __cxa_thread_atexit_impl would take
// the loader's lock, which a thread's first call made inside glibc's
// thread-exit frees must not take). Every other thread's table must still be
// handed back once its thread has gone: by the next threads' looks, and by
// malloc_trim(). dropalloc is this program's malloc.
#include <doctest/doctest.h>

#include <pthread.h>

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "tests/thread_tables.h"

namespace {

using dropalloc_test::tables_on_registry;

// Before the allocator's constructors (priorities run before unprioritised
// constructors in one executable): the allocator's keys then land at 40 and
// above, where it does without them.
int g_keys_made = 0;
__attribute__((constructor(101))) void make_many_keys() {
  for (int i = 0; i < 40; ++i) {
    pthread_key_t key;
    if (pthread_key_create(&key, nullptr) == 0) ++g_keys_made;
  }
}

// A thread's own allocations, some left in its cache when it exits.
void allocating_thread() {
  std::vector<void*> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(std::malloc(16 + 16 * (i % 8)));
  for (void* p : blocks) std::free(p);
}

}  // namespace

TEST_CASE("without a thread-exit key, exited threads' tables are handed back by looks and by malloc_trim") {
  REQUIRE(g_keys_made == 40);
  std::free(std::malloc(32));  // the main thread's table exists before the counts
  REQUIRE(dropalloc_test::wait_for_single_thread() == 1);
  const std::size_t before = tables_on_registry();

  // The premise: a joined thread's table outlives it (no exit handler ran).
  std::thread(allocating_thread).join();
  const std::size_t after_one = tables_on_registry();
  CHECK(after_one == before + 1);

  // Joined threads one after another, and rounds of detached threads whose
  // only calls are glibc's frees at their exit: the tables left never pile up.
  constexpr int kJoined = 2000;
  std::size_t most = after_one;
  for (int i = 0; i < kJoined; ++i) {
    std::thread(allocating_thread).join();
    most = std::max(most, tables_on_registry());
  }
  int detached = 0;
  for (int round = 0; round < 500; ++round) {
    detached += dropalloc_test::run_detached_rounds(1, 8);
    std::thread(allocating_thread).join();
    most = std::max(most, tables_on_registry());
  }
  REQUIRE(dropalloc_test::wait_for_single_thread() == 1);
  const std::size_t left = tables_on_registry();
  malloc_trim(0);
  const std::size_t after_trim = tables_on_registry();
  std::printf(
      "no thread-exit key: tables on the registry %zu -> %zu after one thread, at most %zu during %d joined and "
      "%d detached threads, %zu at the end, %zu after malloc_trim\n",
      before, after_one, most, kJoined + 500, detached, left, after_trim);
  CHECK(detached > 2000);
  CHECK(most <= before + 12);
  CHECK(after_trim == before);
}
