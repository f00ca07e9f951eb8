/* Multi-threaded stress of the malloc family, run with libdropalloc.so
 * preloaded: blocks move between threads through a shared table and are freed
 * by whoever takes them, realloc chains grow and shrink, threads are created
 * and end in rounds while their blocks live on, and the process forks while
 * its threads are busy. Every block carries a pattern derived from its
 * address and size, checked before it is freed or resized. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

enum { kSlots = 4096, kThreads = 6, kRounds = 9, kOpsPerThread = 15000 };

typedef struct {
  unsigned char* p;
  size_t n;
} block;

static _Atomic(block*) g_slots[kSlots];

static uint64_t next_rand(uint64_t* s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static unsigned char pattern(const unsigned char* base, size_t i, size_t n) {
  return (unsigned char)(((uintptr_t)base >> 4) + i * 7 + n);
}

/* Writes the head and tail only: enough to catch overlap, cheap on big blocks. */
static void stamp(block* b) {
  size_t edge = b->n < 64 ? b->n : 64;
  for (size_t i = 0; i < edge; ++i) b->p[i] = pattern(b->p, i, b->n);
  for (size_t i = b->n - edge; i < b->n; ++i) b->p[i] = pattern(b->p, i, b->n);
}

static void verify(const block* b) {
  size_t edge = b->n < 64 ? b->n : 64;
  for (size_t i = 0; i < edge; ++i) CHECK(b->p[i] == pattern(b->p, i, b->n));
  for (size_t i = b->n - edge; i < b->n; ++i) CHECK(b->p[i] == pattern(b->p, i, b->n));
}

static size_t random_size(uint64_t* s) {
  uint64_t r = next_rand(s);
  switch (r % 16) {
    case 0: return 4097 + (r >> 8) % (256 * 1024);        /* page classes */
    case 1: return (r >> 8) % 64 == 0 ? (300u << 10) + (r >> 16) % (1u << 20) : 64;  /* own mapping */
    default: return 1 + (r >> 8) % 1024;                   /* small */
  }
}

static block* new_block(uint64_t* s) {
  block* b = malloc(sizeof *b);
  CHECK(b != NULL);
  b->n = random_size(s);
  b->p = malloc(b->n);
  CHECK(b->p != NULL && malloc_usable_size(b->p) >= b->n);
  stamp(b);
  return b;
}

static void drop_block(block* b) {
  verify(b);
  free(b->p);
  free(b);
}

/* Grows and shrinks one buffer through every size range (up to ~400 KiB),
 * checking the ends of the part that must survive each step. */
static void realloc_chain(uint64_t* s) {
  size_t n = 1 + next_rand(s) % 100;
  unsigned char* p = malloc(n);
  CHECK(p != NULL);
  for (size_t i = 0; i < n; ++i) p[i] = (unsigned char)i;
  for (int step = 0; step < 16; ++step) {
    size_t m = step < 12 ? n * 2 + next_rand(s) % 100 : n / 3 + 1;
    unsigned char* q = realloc(p, m);
    CHECK(q != NULL);
    size_t keep = n < m ? n : m;
    size_t edge = keep < 256 ? keep : 256;
    for (size_t i = 0; i < edge; ++i) CHECK(q[i] == (unsigned char)i);
    for (size_t i = keep - edge; i < keep; ++i) CHECK(q[i] == (unsigned char)i);
    for (size_t i = keep; i < m; ++i) q[i] = (unsigned char)i;
    p = q;
    n = m;
  }
  free(p);
}

static void* worker(void* arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  for (int op = 0; op < kOpsPerThread; ++op) {
    uint64_t r = next_rand(&seed);
    _Atomic(block*)* slot = &g_slots[r % kSlots];
    if ((r >> 32) % 256 == 0) {
      realloc_chain(&seed);
      continue;
    }
    /* Take whatever is there (possibly another thread's block, possibly one
     * allocated by a thread that has ended), free it, maybe put a new one. */
    block* old = atomic_exchange(slot, NULL);
    if (old != NULL) drop_block(old);
    if ((r >> 40) % 4 != 0) {
      block* b = new_block(&seed);
      block* displaced = atomic_exchange(slot, b);
      if (displaced != NULL) drop_block(displaced);
    }
  }
  return NULL;
}

/* In the child of a multi-threaded parent: the allocator must not be stuck on
 * a lock some vanished thread held, and must still work across threads. */
static void child_after_fork(void) {
  uint64_t seed = 42;
  block* keep[256];
  for (int i = 0; i < 256; ++i) keep[i] = new_block(&seed);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, worker, (void*)(uintptr_t)999) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  for (int i = 0; i < 256; ++i) drop_block(keep[i]);
  _exit(0);
}

int main(void) {
  int shim = require_shim();
  for (int round = 0; round < kRounds; ++round) {
    pthread_t threads[kThreads];
    for (int t = 0; t < kThreads; ++t) {
      CHECK(pthread_create(&threads[t], NULL, worker, (void*)(uintptr_t)(round * kThreads + t + 1)) == 0);
    }
    if (round % 3 == 1) {
      pid_t pid = fork();
      CHECK(pid >= 0);
      if (pid == 0) child_after_fork();
      int status = 0;
      CHECK(waitpid(pid, &status, 0) == pid);
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (int t = 0; t < kThreads; ++t) CHECK(pthread_join(threads[t], NULL) == 0);
  }
  /* Blocks of threads long gone: all still whole, all freeable here. */
  size_t survivors = 0;
  for (int i = 0; i < kSlots; ++i) {
    block* b = atomic_exchange(&g_slots[i], NULL);
    if (b != NULL) {
      drop_block(b);
      ++survivors;
    }
  }
  CHECK(survivors > 0);
  if (shim) {
    dropalloc_stats st;
    CHECK(shim_stats(&st) == 0);
    CHECK(st.misuse_refused == 0 && st.foreign_ignored == 0);
  }
  printf("stress passed: %d rounds of %d threads, %zu surviving blocks freed (%s)\n", kRounds, kThreads,
         survivors, shim ? "dropalloc shim" : "libc malloc");
  return 0;
}
