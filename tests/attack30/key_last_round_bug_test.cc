// Finding: a thread whose first allocator call is made from a pthread key
// destructor in glibc's last round of key destructors (round 4,
// PTHREAD_DESTRUCTOR_ITERATIONS) sets dropalloc's exit key, but glibc runs
// no fifth round: the exit handler never runs. The table stays on the
// registry for good with its tag, its cache mapping and the blocks its refill
// took (attack29's finding 2, fixed for rounds 1-3 only). A key destructor
// that sets its key again (to run once more, as jemalloc's tsd and others
// do) is what brings a destructor to round 4; a chain of libraries whose
// destructors each first touch the next one's key does the same.
#include <doctest/doctest.h>

#include <pthread.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "allocator/dropalloc.h"
#include "tests/attack30/common.h"

using dropalloc::droppable_resource;

namespace {

droppable_resource* g_res = nullptr;
pthread_key_t g_key;
// The round whose destructor allocates first. Atomic: TSan does not see
// pthread_join order a thread's late key destructors.
std::atomic<int> g_alloc_round{4};
thread_local int t_round = 0;

void key_destructor(void*) {
  ++t_round;
  if (t_round == g_alloc_round) {
    void* p = g_res->allocate(48, 8);
    g_res->deallocate(p, 48, 8);
  }
  if (t_round < 4) pthread_setspecific(g_key, reinterpret_cast<void*>(1));  // once more, next round
}

struct outcome {
  dropalloc::resource_stats st;
  attack30::tables_count tables;
};

outcome run(int round, int threads) {
  droppable_resource res;
  g_res = &res;
  g_alloc_round = round;
  REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
  const auto before = attack30::count_tables();
  for (int i = 0; i < threads; ++i) {
    std::thread([] { pthread_setspecific(g_key, reinterpret_cast<void*>(1)); }).join();
  }
  res.trim();
  outcome o{res.stats(), attack30::count_tables()};
  o.tables.live -= before.live;
  std::printf("first allocation in round %d, %d threads: %llu arenas mapped after trim, blocks_live %llu, "
              "%zu tables left on the registry list, tags in use %#x\n",
              round, threads, static_cast<unsigned long long>(o.st.arenas_mapped),
              static_cast<unsigned long long>(o.st.blocks_live), o.tables.live, o.tables.tags_in_use);
  pthread_key_delete(g_key);
  g_res = nullptr;
  return o;
}

}  // namespace

TEST_CASE("control: first allocation in key-destructor rounds 1-3 leaves nothing") {
  for (int round = 1; round <= 3; ++round) {
    const outcome o = run(round, 50);
    CHECK(o.st.blocks_live == 0);
    CHECK(o.st.arenas_mapped == 0);
    CHECK(o.tables.live == 0);
  }
}

TEST_CASE("first allocation in the last round of key destructors leaks the thread's table and blocks") {
  const outcome o = run(4, 200);
  CHECK(o.st.blocks_live == 0);
  // Nothing live, every thread gone: trim() hands every arena back unless
  // blocks sit in caches no thread will ever empty.
  CHECK(o.st.arenas_mapped == 0);
  CHECK(o.tables.live == 0);
}
