/* A program whose malloc is dropalloc's, linked in with
 *   cc_binary(malloc = "@dropalloc//allocator:malloc")
 * Exits 0 when malloc and free are served by dropalloc, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/dropalloc_c.h"

int main(void) {
  printf("dropalloc %s\n", dropalloc_version());
  if (strcmp(dropalloc_version(), DROPALLOC_VERSION_STRING) != 0) {
    fprintf(stderr, "malloc_example: library and header versions differ\n");
    return 1;
  }
  if (dropalloc_shim_active() != 1) {
    fprintf(stderr, "malloc_example: malloc is not dropalloc's\n");
    return 1;
  }

  dropalloc_stats before, after;
  if (dropalloc_malloc_stats(&before) != 0) return 1;
  enum { kBlocks = 1000 };
  void* blocks[kBlocks];
  for (int i = 0; i < kBlocks; ++i) {
    blocks[i] = malloc(64 + (size_t)i);
    if (blocks[i] == NULL) return 1;
    memset(blocks[i], i & 0xff, 64 + (size_t)i);
  }
  if (dropalloc_malloc_stats(&after) != 0) return 1;
  for (int i = 0; i < kBlocks; ++i) free(blocks[i]);

  unsigned long long grew = (unsigned long long)(after.blocks_live - before.blocks_live);
  printf("malloc served by dropalloc: %llu more blocks live after %d mallocs\n", grew, kBlocks);
  return grew >= kBlocks ? 0 : 1;
}
