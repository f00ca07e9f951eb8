/* Under the preloaded shim with a 1 ms decay: 4 threads malloc / calloc /
 * realloc / memalign / posix_memalign / aligned_alloc / free blocks of every
 * size from 1 B to 300 KiB (dense classes straddle pages; past 256 KiB own
 * mappings), each filled with a pattern from its (thread, serial) and checked
 * before it is freed or grown; malloc_usable_size >= size; alignments hold;
 * calloc memory is zero. Frees of other threads' blocks go through a shared
 * exchange so pages are shared between threads' live and free blocks while
 * decay releases free pages. About 1.5 s. Exit 1 on any mismatch. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 512
#define THREADS 4

struct blk { unsigned char* p; size_t n; uint32_t seed; };
static struct blk exch[THREADS][64];
static pthread_mutex_t exch_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int failed;

static uint64_t rnd(uint64_t* x) { *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17; return *x; }
static void fill(struct blk* b) { for (size_t i = 0; i < b->n; ++i) b->p[i] = (unsigned char)(b->seed + i * 13u); }
static int ok(const struct blk* b) {
  for (size_t i = 0; i < b->n; ++i) if (b->p[i] != (unsigned char)(b->seed + i * 13u)) return 0;
  return 1;
}
static void fail(const char* what, const struct blk* b) {
  fprintf(stderr, "FAIL: %s (block %p, %zu bytes, usable %zu)\n", what, (void*)b->p, b->n, malloc_usable_size(b->p));
  failed = 1;
}
static size_t pick_size(uint64_t* x) {
  uint64_t r = rnd(x);
  switch (r % 8) {
    case 0: return 1 + (r >> 8) % 64;
    case 1: case 2: return 1 + (r >> 8) % 4096;
    case 3: case 4: return 3000 + (r >> 8) % 6000;
    case 5: return 1 + (r >> 8) % 65536;
    case 6: return 60000 + (r >> 8) % 210000;
    default: return 250000 + (r >> 8) % 60000;
  }
}

static void* worker(void* arg) {
  int id = (int)(intptr_t)arg;
  uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
  struct blk* s = calloc(SLOTS, sizeof *s);
  uint32_t serial = (uint32_t)id << 24;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long it = 0;; ++it) {
    if ((it & 1023) == 0) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 1500 || failed) break;
      if ((it & 8191) == 0) malloc_trim(0);
    }
    struct blk* b = &s[rnd(&x) % SLOTS];
    if (b->p != NULL) {
      if (!ok(b)) fail("contents changed", b);
      uint64_t r = rnd(&x) % 4;
      if (r == 0) {  /* grow or shrink in place or moved */
        size_t n = pick_size(&x);
        unsigned char* q = realloc(b->p, n);
        size_t keep = n < b->n ? n : b->n;
        for (size_t i = 0; i < keep; ++i) {
          if (q[i] != (unsigned char)(b->seed + i * 13u)) { struct blk c = {q, keep, b->seed}; fail("realloc lost bytes", &c); break; }
        }
        b->p = q;
        b->n = n;
        fill(b);
        continue;
      }
      if (r == 1) {  /* hand it to another thread to free */
        int to = (int)(rnd(&x) % THREADS);
        pthread_mutex_lock(&exch_lock);
        struct blk* e = &exch[to][rnd(&x) % 64];
        struct blk old = *e;
        *e = *b;
        pthread_mutex_unlock(&exch_lock);
        if (old.p != NULL) {
          if (!ok(&old)) fail("contents changed (exchanged)", &old);
          free(old.p);
        }
        b->p = NULL;
        continue;
      }
      free(b->p);
      b->p = NULL;
      continue;
    }
    size_t n = pick_size(&x);
    uint64_t how = rnd(&x) % 6;
    size_t align = (size_t)16 << (rnd(&x) % 9); /* 16 .. 4096 */
    unsigned char* p = NULL;
    switch (how) {
      case 0: p = calloc(1, n);
        for (size_t i = 0; i < n; ++i) if (p[i] != 0) { struct blk c = {p, n, 0}; fail("calloc not zero", &c); break; }
        break;
      case 1: p = memalign(align, n); break;
      case 2: if (posix_memalign((void**)&p, align, n) != 0) p = NULL; break;
      case 3: p = aligned_alloc(align, (n + align - 1) / align * align); break;
      default: p = malloc(n); align = n <= 8 ? 8 : 16; break;
    }
    if (p == NULL) { fprintf(stderr, "FAIL: allocation of %zu failed\n", n); failed = 1; break; }
    if (how != 0 && ((uintptr_t)p % align) != 0) { struct blk c = {p, n, 0}; fail("misaligned", &c); }
    if (malloc_usable_size(p) < n) { struct blk c = {p, n, 0}; fail("usable size too small", &c); }
    b->p = p;
    b->n = n;
    b->seed = ++serial;
    fill(b);
  }
  for (int i = 0; i < SLOTS; ++i) if (s[i].p) { if (!ok(&s[i])) fail("contents changed at end", &s[i]); free(s[i].p); }
  free(s);
  return NULL;
}

int main(void) {
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; ++i) pthread_create(&t[i], NULL, worker, (void*)(intptr_t)i);
  for (int i = 0; i < THREADS; ++i) pthread_join(t[i], NULL);
  for (int i = 0; i < THREADS; ++i)
    for (int k = 0; k < 64; ++k)
      if (exch[i][k].p) { if (!ok(&exch[i][k])) fail("contents changed (exchange, end)", &exch[i][k]); free(exch[i][k].p); }
  if (failed) return 1;
  printf("ok\n");
  return 0;
}
