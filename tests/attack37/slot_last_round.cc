// A thread whose first read sections come in glibc's last round of key
// destructors (round 4: a destructor that set its key again three times),
// and number more than kLentSections (32): the 33rd claims a slot "for
// life" and sets the slot key, but glibc runs no fifth round, so the key's
// destructor never gives the slot back. Each such thread keeps one of the
// 1024 reader slots taken for good (the leak commit 257da03 set out to end
// for threads whose calls come late). glibc clears the first block of key
// values after its last round, so no later thread inherits the value either
// (checked on threads with stacks of their own and on glibc's cached
// stacks). Once all 1024 are gone every read section of every thread that
// has no slot yet serialises on the overflow lock.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>

#include "allocator/dropalloc.h"
#include "tests/attack37/common.h"

using dropalloc::droppable_resource;

namespace {

droppable_resource* g_res = nullptr;
void* g_block = nullptr;
pthread_key_t g_key;
thread_local int t_round = 0;
int g_sections = 40;

void key_destructor(void*) {
  if (++t_round == 4) {
    for (int i = 0; i < g_sections; ++i) (void)g_res->owns(g_block);  // a read section each
  }
  if (t_round < 4) pthread_setspecific(g_key, reinterpret_cast<void*>(1));
}

void* body(void*) {
  pthread_setspecific(g_key, reinterpret_cast<void*>(1));
  return nullptr;
}

std::uint32_t run(int threads, int sections, bool own_stacks) {
  g_sections = sections;
  const std::uint32_t before = dropalloc::core::grace_internal::slots_taken();
  constexpr std::size_t kStack = 256 * 1024;
  for (int i = 0; i < threads; ++i) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    void* stack = nullptr;
    if (own_stacks) {
      stack = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      REQUIRE(stack != MAP_FAILED);
      pthread_attr_setstack(&attr, stack, kStack);
    }
    pthread_t t;
    REQUIRE(pthread_create(&t, &attr, body, nullptr) == 0);
    pthread_join(t, nullptr);
    pthread_attr_destroy(&attr);
    if (stack != nullptr) munmap(stack, kStack);
  }
  const std::uint32_t after = dropalloc::core::grace_internal::slots_taken();
  std::printf("%d threads, %d read sections each in key-destructor round 4, %s: reader slots taken %u -> %u\n",
              threads, sections, own_stacks ? "own stacks" : "glibc stacks", before, after);
  return after - before;
}

}  // namespace

// run() with a resource of its own and the key in place.
std::uint32_t slots_kept(int threads, int sections, bool own_stacks) {
  droppable_resource res;
  g_res = &res;
  g_block = res.allocate(64, 8);
  REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
  const std::uint32_t leaked = run(threads, sections, own_stacks);
  pthread_key_delete(g_key);
  res.deallocate(g_block, 64, 8);
  return leaked;
}

TEST_CASE("control: up to 32 read sections in the last round of key destructors keep no slot") {
  CHECK(slots_kept(100, 32, true) == 0);
}

TEST_CASE("more than 32 read sections in the last round of key destructors keep a reader slot for good") {
  CHECK(slots_kept(100, 40, true) == 0);
}

TEST_CASE("the same on glibc's own (cached) stacks") { CHECK(slots_kept(100, 40, false) == 0); }
