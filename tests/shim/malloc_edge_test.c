/* Edge cases of the malloc family. Built as plain C against libc; run once as
 * is (the expectations hold for glibc's malloc too) and once with
 * libdropalloc.so preloaded, where the shim-only checks run as well. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/shim/shim_check.h"

static int g_shim;

/* Keeps the compiler from reasoning about (and removing) calls whose
 * failure is the point of the test. */
static size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

static void test_malloc(void) {
  void* a = malloc(0);
  void* b = malloc(0);
  CHECK(a != NULL && b != NULL && a != b);
  free(a);
  free(b);

  errno = 0;
  CHECK(malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(malloc(opaque((size_t)PTRDIFF_MAX + 1)) == NULL && errno == ENOMEM);

  for (size_t n = 1; n <= 4096; n += (n < 64 ? 1 : 7)) {
    unsigned char* p = malloc(n);
    CHECK(p != NULL);
    CHECK((uintptr_t)p % (n <= 8 ? 8 : 16) == 0);
    size_t u = malloc_usable_size(p);
    CHECK(u >= n);
    memset(p, 0xab, u);  /* all of the usable size is ours */
    free(p);
  }
  size_t big = 10u << 20;
  unsigned char* p = malloc(big);
  CHECK(p != NULL && malloc_usable_size(p) >= big);
  memset(p, 1, big);
  free(p);
  CHECK(malloc_usable_size(NULL) == 0);
}

static void test_free_keeps_errno(void) {
  free(NULL);
  errno = 1234;
  free(NULL);
  CHECK(errno == 1234);
  void* p = malloc(100);
  void* q = malloc(1u << 20);
  errno = 4321;
  free(p);
  free(q);
  CHECK(errno == 4321);
  if (g_shim) {
    /* A double free is refused (and reported), and still leaves errno be. */
    void* volatile r = malloc(32);
    free(r);
    errno = 77;
    free(r);
    CHECK(errno == 77);
    /* Memory that is not dropalloc's is ignored and counted. */
    int on_stack = 0;
    dropalloc_stats before, after;
    CHECK(shim_stats(&before) == 0);
    void* volatile foreign = &on_stack;
    errno = 78;
    free(foreign);
    CHECK(errno == 78);
    CHECK(shim_stats(&after) == 0);
    CHECK(after.foreign_ignored == before.foreign_ignored + 1);
    CHECK(after.misuse_refused >= 1);
  }
}

static void test_calloc(void) {
  errno = 0;
  CHECK(calloc(opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(calloc(opaque(3), SIZE_MAX / 2) == NULL && errno == ENOMEM);
  void* z = calloc(0, 0);
  CHECK(z != NULL);
  free(z);
  /* Recycled blocks must come back zeroed. */
  static const size_t sizes[] = {1, 24, 100, 1000, 4096, 5000, 70000, 300000};
  for (int round = 0; round < 4; ++round) {
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
      unsigned char* d = malloc(sizes[i]);
      CHECK(d != NULL);
      memset(d, 0xff, sizes[i]);
      free(d);
      unsigned char* c = calloc(1, sizes[i]);
      CHECK(c != NULL);
      for (size_t k = 0; k < sizes[i]; ++k) CHECK(c[k] == 0);
      free(c);
    }
  }
}

static void fill(unsigned char* p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; ++i) p[i] = (unsigned char)(seed + i * 31);
}
static int same(const unsigned char* p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != (unsigned char)(seed + i * 31)) return 0;
  }
  return 1;
}

static void test_realloc(void) {
  /* realloc(NULL, n) is malloc(n). */
  unsigned char* p = realloc(NULL, 10);
  CHECK(p != NULL);
  fill(p, 10, 1);
  /* Growth through small, page and large sizes keeps the contents. */
  size_t n = 10;
  for (size_t next = 16; next <= (4u << 20); next = next * 3 / 2 + 1) {
    p = realloc(p, next);
    CHECK(p != NULL && malloc_usable_size(p) >= next);
    CHECK(same(p, n, 1));
    fill(p, next, 1);
    n = next;
  }
  /* Shrinking keeps the prefix. */
  for (size_t next = n / 3; next >= 8; next /= 3) {
    p = realloc(p, next);
    CHECK(p != NULL && malloc_usable_size(p) >= next);
    CHECK(same(p, next, 1));
    n = next;
  }
  /* Failure leaves the old block alone. */
  errno = 0;
  CHECK(realloc(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  CHECK(same(p, n, 1));
  /* reallocarray: overflow fails with ENOMEM, the block stays valid. */
  errno = 0;
  CHECK(reallocarray(p, opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
  CHECK(same(p, n, 1));
  p = reallocarray(p, 100, 10);
  CHECK(p != NULL && same(p, n, 1));
  free(p);
  unsigned char* q = reallocarray(NULL, 10, 10);
  CHECK(q != NULL);
  free(q);
  /* realloc(p, 0) frees p and returns NULL, as glibc does. */
  void* r = malloc(50);
  CHECK(realloc(r, 0) == NULL);
}

static void test_aligned(void) {
  void* out = (void*)0x1;
  CHECK(posix_memalign(&out, 0, 16) == EINVAL && out == (void*)0x1);
  CHECK(posix_memalign(&out, 3, 16) == EINVAL && out == (void*)0x1);
  CHECK(posix_memalign(&out, 4, 16) == EINVAL && out == (void*)0x1);  /* < sizeof(void*) */
  CHECK(posix_memalign(&out, 64, opaque(SIZE_MAX)) == ENOMEM && out == (void*)0x1);
  for (size_t a = sizeof(void*); a <= (1u << 22); a *= 2) {
    static const size_t sizes[] = {0, 1, 100, 5000, 300000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
      void* p = NULL;
      CHECK(posix_memalign(&p, a, sizes[i]) == 0);
      CHECK(p != NULL && (uintptr_t)p % a == 0);
      CHECK(malloc_usable_size(p) >= sizes[i]);
      memset(p, 7, sizes[i]);
      free(p);
    }
  }
  void* p = aligned_alloc(64, 100);  /* size need not be a multiple */
  CHECK(p != NULL && (uintptr_t)p % 64 == 0);
  free(p);
  p = aligned_alloc(1u << 14, 10);
  CHECK(p != NULL && (uintptr_t)p % (1u << 14) == 0);
  free(p);
  p = memalign(32, 1000);
  CHECK(p != NULL && (uintptr_t)p % 32 == 0);
  free(p);
  p = valloc(10);
  CHECK(p != NULL && (uintptr_t)p % 4096 == 0);
  free(p);
  p = pvalloc(1);
  CHECK(p != NULL && (uintptr_t)p % 4096 == 0 && malloc_usable_size(p) >= 4096);
  free(p);
  errno = 0;
  CHECK(pvalloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  if (g_shim) {
    /* glibc 2.36 rounds these up; the shim follows C17 and refuses. */
    errno = 0;
    CHECK(aligned_alloc(opaque(24), 48) == NULL && errno == EINVAL);
    /* C23 sized frees (glibc 2.36 has none). */
    void (*fs)(void*, size_t) = (void (*)(void*, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void*, size_t, size_t) = (void (*)(void*, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    CHECK(fs != NULL && fas != NULL);
    fs(malloc(40), 40);
    fas(aligned_alloc(256, 512), 256, 512);
  }
}

/* malloc_trim hands freed memory back at once and says whether it did (glibc's
 * contract: 1 or 0); the shim's resident bytes fall accordingly. */
static void test_trim(void) {
  enum { kBlocks = 128 * 1024 };
  static void* blocks[kBlocks];
  for (int i = 0; i < kBlocks; ++i) {
    blocks[i] = malloc(256);
    CHECK(blocks[i] != NULL);
    memset(blocks[i], i & 0xff, 256);
  }
  dropalloc_stats full;
  if (g_shim) CHECK(shim_stats(&full) == 0);
  for (int i = 0; i < kBlocks; ++i) free(blocks[i]);
  int trimmed = malloc_trim(0);
  CHECK(trimmed == 0 || trimmed == 1);
  if (g_shim) {
    dropalloc_stats after;
    CHECK(trimmed == 1);
    CHECK(shim_stats(&after) == 0);
    CHECK(after.bytes_resident + 16 * 1024 * 1024 < full.bytes_resident);
    int (*print)(int, unsigned) = (int (*)(int, unsigned))dlsym(RTLD_DEFAULT, "dropalloc_stats_print");
    CHECK(print != NULL && print(2, 0) == 0);
  }
}

int main(void) {
  g_shim = require_shim();
  test_malloc();
  test_free_keeps_errno();
  test_calloc();
  test_realloc();
  test_aligned();
  test_trim();
  if (g_shim) {
    dropalloc_stats st;
    CHECK(shim_stats(&st) == 0);
    CHECK(st.blocks_live > 0 && st.droppable == 0);
  }
  printf("malloc edge cases passed (%s)\n", g_shim ? "dropalloc shim" : "libc malloc");
  return 0;
}
