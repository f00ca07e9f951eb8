/* tests/attack31: realloc's contract through the LD_PRELOAD shim for large
 * blocks in reused mappings (commit 2c00465: realloc grows such a block within
 * its mapping). Contents kept up to min(old, new); calloc'd bytes stay zero
 * through a realloc; shrink then regrow; malloc_usable_size at least the
 * request and never below what the block held; 4 threads of random large
 * reallocs with checksums; malloc_stats consistent at the end.
 * Run plain and with DROPALLOC_DROPPABLE_RANGE (see BUILD). */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)

static uint64_t word_at(uint64_t seed, size_t i) {
  return (seed << 40) ^ (i * 0x9e3779b97f4a7c15ull) ^ 0x8000000000000001ull;
}
static void wfill(void* p, size_t from, size_t to, uint64_t seed) {
  unsigned char* b = p;
  for (size_t i = from; i < to; ++i) b[i] = (unsigned char)(word_at(seed, i / 8) >> (8 * (i % 8)));
}
static void wfill_fast(void* p, size_t n, uint64_t seed) {
  uint64_t* w = p;
  for (size_t i = 0; i < n / 8; ++i) w[i] = word_at(seed, i);
  wfill(p, n / 8 * 8, n, seed);
}
/* Index of the first byte of [0, n) that differs from the pattern, or n. */
static size_t wfirst_bad(const void* p, size_t n, uint64_t seed) {
  const uint64_t* w = p;
  for (size_t i = 0; i < n / 8; ++i) {
    if (w[i] != word_at(seed, i)) return 8 * i;
  }
  const unsigned char* b = p;
  for (size_t i = n / 8 * 8; i < n; ++i) {
    if (b[i] != (unsigned char)(word_at(seed, i / 8) >> (8 * (i % 8)))) return i;
  }
  return n;
}
static int all_zero(const void* p, size_t n) {
  const unsigned char* b = p;
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return 0;
  }
  return 1;
}

/* A block of `want` bytes in a reused mapping of `mapping` bytes (old data
 * 0xab): mapping freed first, so the cache serves the smaller request. */
static void* in_reused_mapping(size_t mapping, size_t want) {
  void* big = malloc(mapping);
  CHECK(big != NULL);
  memset(big, 0xab, mapping);
  free(big);
  void* p = malloc(want);
  CHECK(p != NULL);
  if (p != big || malloc_usable_size(p) < mapping) {
    fprintf(stderr, "note: %zu not served from the cached %zu mapping (usable %zu)\n", want, mapping,
            malloc_usable_size(p));
  }
  return p;
}

static void directed(void) {
  /* 1. growth steps within the mapping, then past it. */
  size_t n = 2 * MIB + 100;
  unsigned char* p = in_reused_mapping(8 * MIB, n);
  void* first = p;
  wfill_fast(p, n, 1);
  const size_t steps[] = {3 * MIB, 3 * MIB + 1, 5 * MIB - 7, 8 * MIB, 8 * MIB - 4096, 8 * MIB, 9 * MIB + 3, 20 * MIB};
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; ++i) {
    size_t m = steps[i];
    size_t before = malloc_usable_size(p);
    unsigned char* q = realloc(p, m);
    CHECK(q != NULL);
    size_t keep = n < m ? n : m;
    size_t bad = wfirst_bad(q, keep, 1);
    if (bad != keep) fprintf(stderr, "step %zu: byte %zu of %zu lost\n", i, bad, keep);
    CHECK(bad == keep);
    CHECK(malloc_usable_size(q) >= m);
    if (q == p && m <= before) CHECK(malloc_usable_size(q) == before);
    wfill(q, keep, m, 1);  /* the pattern now covers [0, m) */
    n = m;
    p = q;
  }
  (void)first;
  free(p);

  /* 2. calloc from a reused mapping, then realloc: its bytes stay zero. */
  for (int round = 0; round < 4; ++round) {
    void* big = malloc(8 * MIB);
    memset(big, 0xab, 8 * MIB);
    free(big);
    size_t want = 2 * MIB + 4096 * (size_t)round + 17;
    unsigned char* c = calloc(1, want);
    CHECK(c != NULL);
    CHECK(all_zero(c, want));
    unsigned char* d = realloc(c, 5 * MIB + 11);
    CHECK(d != NULL);
    CHECK(all_zero(d, want));
    unsigned char* e = realloc(d, 7 * MIB);
    CHECK(e != NULL);
    CHECK(all_zero(e, want));
    free(e);
  }

  /* 3. shrink then regrow, in a reused mapping. */
  for (int round = 0; round < 4; ++round) {
    size_t m0 = 3 * MIB + 12345;
    unsigned char* a = in_reused_mapping(12 * MIB, m0);
    wfill_fast(a, m0, 7 + (uint64_t)round);
    size_t shrink[] = {3 * MIB, 2 * MIB + 1, 300 * KIB, 257 * KIB};
    size_t m = m0;
    for (size_t i = 0; i < 4; ++i) {
      unsigned char* b = realloc(a, shrink[(i + (size_t)round) % 4]);
      CHECK(b != NULL);
      size_t k = shrink[(i + (size_t)round) % 4];
      if (k > m) k = m;
      CHECK(wfirst_bad(b, k, 7 + (uint64_t)round) == k);
      m = k;
      a = b;
    }
    size_t grow[] = {1 * MIB, 6 * MIB, 11 * MIB, 12 * MIB, 13 * MIB};
    for (size_t i = 0; i < 5; ++i) {
      unsigned char* b = realloc(a, grow[i]);
      CHECK(b != NULL);
      CHECK(wfirst_bad(b, m, 7 + (uint64_t)round) == m);
      CHECK(malloc_usable_size(b) >= grow[i]);
      wfill(b, m, grow[i], 7 + (uint64_t)round);
      m = grow[i];
      a = b;
    }
    free(a);
  }
}

struct slot {
  unsigned char* p;
  size_t n;
  uint64_t seed;
};

static void* churn(void* arg) {
  uint64_t x = (uint64_t)(uintptr_t)arg * 0x2545f4914f6cdd1dull + 1;
  struct slot s[6];
  memset(s, 0, sizeof s);
  for (int op = 0; op < 600; ++op) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    struct slot* t = &s[x % 6];
    unsigned r = (unsigned)(x >> 20) % 10;
    size_t m = 257 * KIB + (size_t)(x >> 32) % (6 * MIB);
    if (t->p == NULL) {
      t->p = (r & 1) ? calloc(1, m) : malloc(m);
      CHECK(t->p != NULL);
      if (r & 1) CHECK(all_zero(t->p, m < 8192 ? m : 8192));
      t->n = m;
      t->seed = x;
      wfill_fast(t->p, m, t->seed);
    } else if (r < 2) {
      CHECK(wfirst_bad(t->p, t->n, t->seed) == t->n);
      free(t->p);
      t->p = NULL;
    } else {
      size_t before = malloc_usable_size(t->p);
      CHECK(before >= t->n);
      if (r < 7 && before > t->n) m = t->n + 1 + (size_t)(x >> 32) % (before - t->n); /* within the mapping */
      unsigned char* q = realloc(t->p, m);
      CHECK(q != NULL);
      size_t keep = t->n < m ? t->n : m;
      size_t bad = wfirst_bad(q, keep, t->seed);
      if (bad != keep) fprintf(stderr, "churn: realloc %zu -> %zu (usable %zu): byte %zu lost\n", t->n, m, before, bad);
      CHECK(bad == keep);
      CHECK(malloc_usable_size(q) >= m);
      wfill(q, keep, m, t->seed);
      t->p = q;
      t->n = m;
    }
  }
  for (int i = 0; i < 6; ++i) {
    if (s[i].p != NULL) {
      CHECK(wfirst_bad(s[i].p, s[i].n, s[i].seed) == s[i].n);
      free(s[i].p);
    }
  }
  return NULL;
}

/* The child of a fork taken while other threads realloc: large reuse and
 * growth within a mapping work there, contents kept. */
static int child_work(void) {
  for (int i = 0; i < 3; ++i) {
    unsigned char* p = in_reused_mapping(8 * MIB, 2 * MIB + 5);
    wfill_fast(p, 2 * MIB + 5, 99);
    unsigned char* q = realloc(p, 6 * MIB);
    if (q == NULL || wfirst_bad(q, 2 * MIB + 5, 99) != 2 * MIB + 5) return 1;
    free(q);
  }
  return 0;
}

static void forks_during_churn(void) {
  pthread_t th[2];
  for (int i = 0; i < 2; ++i) CHECK(pthread_create(&th[i], NULL, churn, (void*)(uintptr_t)(i + 11)) == 0);
  for (int i = 0; i < 20; ++i) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(child_work());
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fprintf(stderr, "fork %d: child status %d\n", i, status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  for (int i = 0; i < 2; ++i) CHECK(pthread_join(th[i], NULL) == 0);
}

int main(int argc, char** argv) {
  require_shim();
  if (argc > 1 && strcmp(argv[1], "fork") == 0) {
    forks_during_churn();
    puts("shim_realloc fork: ok");
    return 0;
  }
  dropalloc_stats st0;
  int have_stats = shim_stats(&st0) == 0;
  directed();
  pthread_t th[4];
  for (int i = 0; i < 4; ++i) CHECK(pthread_create(&th[i], NULL, churn, (void*)(uintptr_t)(i + 1)) == 0);
  for (int i = 0; i < 4; ++i) CHECK(pthread_join(th[i], NULL) == 0);
  if (have_stats) {
    dropalloc_stats st;
    CHECK(shim_stats(&st) == 0);
    fprintf(stderr, "blocks_live %llu -> %llu, misuse_refused %llu\n", (unsigned long long)st0.blocks_live,
            (unsigned long long)st.blocks_live, (unsigned long long)st.misuse_refused);
    CHECK(st.misuse_refused == st0.misuse_refused);
    CHECK(st.blocks_live <= st0.blocks_live + 16);  /* what stdio and the threads keep */
  }
  puts("shim_realloc: ok");
  return 0;
}
