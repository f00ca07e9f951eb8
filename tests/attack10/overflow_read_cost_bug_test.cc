// More live threads than reader slots (1024), no seccomp: a thread without a
// slot calls claim_slot() again in every read section (read_section's
// constructor, allocator/core/grace.h: t_slot is still null), and with every
// slot held by a live thread claim_slot() issues one tgkill per slot, 1024
// syscalls, before it falls back to the overflow lock. Every check(),
// generation(), usable_size() and checked free of such a thread pays that.
#include <doctest/doctest.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::droppable_resource;

namespace {

droppable_resource* g_r;
block_ref g_b;
std::atomic<int> g_ready{0};
int g_pipe[2];  // holders block reading it until its write end closes

void* holder(void*) {
  (void)g_r->check(g_b);
  g_ready.fetch_add(1);
  char c;
  (void)read(g_pipe[0], &c, 1);  // blocked, not runnable
  return nullptr;
}

double ns_per_check(int n) {
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; ++i) (void)g_r->check(g_b);
  clock_gettime(CLOCK_MONOTONIC, &b);
  return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

double g_ns = 0;
void* timed(void*) {
  g_ns = ns_per_check(50);
  return nullptr;
}

}  // namespace

TEST_CASE("a thread without a reader slot: check() costs about what it costs with one") {
  droppable_resource r;
  g_r = &r;
  g_b = r.allocate_block(64);
  (void)r.seal(g_b);
  REQUIRE(pipe(g_pipe) == 0);
  double with_slot = ns_per_check(5000);
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 64 * 1024);
  std::vector<pthread_t> ts;
  for (int i = 0; i < 1100; ++i) {
    pthread_t t;
    if (pthread_create(&t, &a, holder, nullptr) != 0) break;
    ts.push_back(t);
  }
  while (g_ready.load() < static_cast<int>(ts.size())) usleep(1000);
  pthread_t t;
  REQUIRE(pthread_create(&t, &a, timed, nullptr) == 0);
  pthread_join(t, nullptr);
  pthread_attr_destroy(&a);
  close(g_pipe[1]);
  for (pthread_t h : ts) pthread_join(h, nullptr);
  MESSAGE("check(): " << with_slot << " ns with a slot, " << g_ns << " ns without one (" << ts.size()
                      << " live threads)");
  CHECK(g_ns < 100 * with_slot);
  r.deallocate(g_b);
}
