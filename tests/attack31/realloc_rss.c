/* tests/attack31: peak RSS of a realloc-heavy program whose large blocks are
 * served from reused mappings (commit 2c00465 keeps such a block in its up to
 * 4x mapping as it grows instead of copying it out). Prints ru_maxrss and the
 * sum of live requests at its worst; fails if the peak passes
 * RSS_LIMIT_FACTOR (default 3) times the most bytes ever live plus 48 MiB
 * (kLargeTailKeptMaxBytes 16 MiB + the cache's resident floor and slack).
 * Run under the shim of this commit and of its parent to compare. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tests/shim/shim_check.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)
#define SLOTS 24

static uint64_t x = 88172645463325252ull;
static uint64_t next(void) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

int main(int argc, char** argv) {
  require_shim();
  int rounds = argc > 1 ? atoi(argv[1]) : 20000;
  const char* f = getenv("RSS_LIMIT_FACTOR");
  double factor = f != NULL ? atof(f) : 3.0;
  unsigned char* p[SLOTS] = {0};
  size_t n[SLOTS] = {0};
  size_t live = 0, live_max = 0;
  for (int r = 0; r < rounds; ++r) {
    int i = (int)(next() % SLOTS);
    unsigned k = (unsigned)(next() % 8);
    if (p[i] == NULL) {
      /* Big ones freed feed the cache; small large ones reuse them. */
      size_t m = (k < 2) ? 4 * MIB + next() % (8 * MIB) : 260 * KIB + next() % (2 * MIB);
      p[i] = malloc(m);
      CHECK(p[i] != NULL);
      memset(p[i], (int)(r & 0xff) | 1, m);
      n[i] = m;
      live += m;
    } else if (k < 3) {
      free(p[i]);
      live -= n[i];
      p[i] = NULL;
      n[i] = 0;
    } else {
      /* A vector-like growth by 1.25x-2x, or a shrink now and then. */
      size_t m = k == 7 ? n[i] / 2 + 1 : n[i] + n[i] / 4 + next() % (n[i] * 3 / 4 + 1);
      if (m > 16 * MIB) m = 260 * KIB + next() % MIB;
      unsigned char* q = realloc(p[i], m);
      CHECK(q != NULL);
      if (m > n[i]) memset(q + n[i], 0x5a, m - n[i]);
      live += m;
      live -= n[i];
      p[i] = q;
      n[i] = m;
    }
    if (live > live_max) live_max = live;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  size_t peak = (size_t)ru.ru_maxrss * KIB;
  printf("peak_rss_kib %ld live_max_kib %zu\n", ru.ru_maxrss, live_max / KIB);
  for (int i = 0; i < SLOTS; ++i) free(p[i]);
  if ((double)peak > factor * (double)live_max + 48.0 * MIB) {
    fprintf(stderr, "FAIL: peak RSS %zu KiB > %.1f x live max %zu KiB + 48 MiB\n", peak / KIB, factor,
            live_max / KIB);
    return 1;
  }
  return 0;
}
