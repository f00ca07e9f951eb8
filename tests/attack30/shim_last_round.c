/* Finding 1 under the LD_PRELOAD shim: a C program's threads whose first
 * malloc is in a key destructor's last round (glibc's 4th) never run
 * dropalloc's exit handler: each leaves its table and a 384 KiB cache
 * mapping of the malloc heap (plus the blocks a refill took, and its tag)
 * for good. ROUND (environment) picks the round of the first malloc; the
 * process's address space may grow by at most 64 MiB over 400 such threads
 * (the threads' own stacks are reused: joined). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>

#include "tests/shim/shim_check.h"

static pthread_key_t g_key;
static int g_alloc_round = 4;
static __thread int t_round;

static void key_destructor(void* v) {
  (void)v;
  ++t_round;
  if (t_round == g_alloc_round) {
    char* p = malloc(48);
    if (p != NULL) p[0] = 1;
    free(p);
  }
  if (t_round < 4) pthread_setspecific(g_key, (void*)1);
}

static void* body(void* arg) {
  (void)arg;
  pthread_setspecific(g_key, (void*)1);
  return NULL;
}

// Address space and resident KiB of this process (/proc/self/statm).
static void statm_kib(size_t* vm, size_t* rss) {
  FILE* f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f != NULL) {
    if (fscanf(f, "%lu %lu", &size, &res) != 2) size = res = 0;
    fclose(f);
  }
  *vm = size * 4;
  *rss = res * 4;
}

int main(void) {
  require_shim();
  const char* r = getenv("ROUND");
  if (r != NULL) g_alloc_round = atoi(r);
  CHECK(pthread_key_create(&g_key, key_destructor) == 0);
  /* Warm up: thread stacks cached by glibc, a few spare tables. */
  for (int i = 0; i < 8; ++i) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, body, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
  }
  size_t vm0, rss0;
  statm_kib(&vm0, &rss0);
  const int threads = 400;
  for (int i = 0; i < threads; ++i) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, body, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
  }
  malloc_trim(0);
  size_t vm1, rss1;
  statm_kib(&vm1, &rss1);
  printf("first malloc in key-destructor round %d, %d threads: address space %zu -> %zu KiB (%+ld), rss %zu -> %zu KiB\n",
         g_alloc_round, threads, vm0, vm1, (long)vm1 - (long)vm0, rss0, rss1);
  CHECK(vm1 < vm0 + 64 * 1024);
  return 0;
}
