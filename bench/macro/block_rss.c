// Resident memory of many blocks of one size, against the ideal (blocks x
// size): what a size-class table and its layout cost in memory. Plain C, for
// any allocator preloaded under it:
//   LD_PRELOAD=<allocator.so> bazel-bin/bench/macro_block_rss 3000 4200 5000 9000
// Prints, per size: resident growth in MB, the ideal, and the ratio.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kBlocks = 20000 };

static long resident_kib(void) {
  FILE* f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
  }
  fclose(f);
  return kib;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SIZE...\n", argv[0]);
    return 2;
  }
  static void* blocks[kBlocks];
  for (int a = 1; a < argc; ++a) {
    long n = atol(argv[a]);
    if (n <= 0) {
      fprintf(stderr, "block_rss: bad size '%s'\n", argv[a]);
      return 2;
    }
    long before = resident_kib();
    for (int i = 0; i < kBlocks; ++i) {
      blocks[i] = malloc((size_t)n);
      if (blocks[i] == NULL) {
        fprintf(stderr, "block_rss: malloc(%ld) failed\n", n);
        return 1;
      }
      memset(blocks[i], 1, (size_t)n);
    }
    long after = resident_kib();
    double got = (after - before) * 1024.0 / 1e6, ideal = (double)kBlocks * n / 1e6;
    printf("%6ld B x %d: %7.1f MB resident, ideal %7.1f MB, %.2fx\n", n, kBlocks, got, ideal, got / ideal);
    for (int i = 0; i < kBlocks; ++i) free(blocks[i]);
  }
  return 0;
}
