/* The C API in one page: cache decoded tiles in droppable memory, detect the
 * ones the kernel took back, and rebuild exactly those.
 *
 *   bazel run //examples:c_api_example
 */
#include <stdio.h>
#include <string.h>

#include "allocator/dropalloc_c.h"

enum { kTiles = 8, kTileBytes = 64 * 1024 };

/* Stands in for expensive work (decoding, decompressing) we can redo. */
static void decode_tile(int i, unsigned char* out) { memset(out, 'a' + i, kTileBytes); }

int main(void) {
  dropalloc_resource* res = dropalloc_create(0);
  if (res == NULL) {
    perror("dropalloc_create");
    return 1;
  }
  dropalloc_block tiles[kTiles];
  for (int i = 0; i < kTiles; ++i) {
    tiles[i] = dropalloc_alloc(res, kTileBytes, 0);
    if (tiles[i].ptr == NULL) {
      perror("dropalloc_alloc");
      return 1;
    }
    decode_tile(i, tiles[i].ptr);
    dropalloc_seal(res, tiles[i].ptr);  /* written: the kernel may now drop it */
  }

  /* Pretend memory pressure took one page of tile 3 (the kernel does this on
   * its own under a memory limit; this call does it deterministically). */
  dropalloc_drop_for_testing(res, (unsigned char*)tiles[3].ptr + 8192, 4096);

  int rebuilt = 0;
  for (int i = 0; i < kTiles; ++i) {
    unsigned char first = ((unsigned char*)tiles[i].ptr)[kTileBytes - 1];  /* read... */
    if (!dropalloc_is_intact(res, tiles[i])) {                           /* ...then check */
      printf("tile %d: %s, rebuilding\n", i,
             dropalloc_state_name(dropalloc_check(res, tiles[i].ptr, tiles[i].generation)));
      decode_tile(i, tiles[i].ptr);  /* every byte written again */
      if (dropalloc_seal_rewritten(res, tiles[i].ptr) != DROPALLOC_INTACT) return 1;
      tiles[i].generation = dropalloc_generation(res, tiles[i].ptr);  /* a new life */
      ++rebuilt;
    } else if (first != 'a' + i) {
      printf("tile %d: reported intact with wrong contents\n", i);
      return 1;
    }
  }

  dropalloc_stats st;
  dropalloc_get_stats(res, &st);
  printf("%d of %d tiles rebuilt; %llu blocks live, %llu drops detected, %s memory\n", rebuilt, kTiles,
         (unsigned long long)st.blocks_live, (unsigned long long)st.drops_detected,
         st.droppable ? "droppable" : "private fallback");
  for (int i = 0; i < kTiles; ++i) dropalloc_free(res, tiles[i].ptr);
  dropalloc_destroy(res);
  return rebuilt == 1 ? 0 : 1;
}
