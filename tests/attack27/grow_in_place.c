/* realloc of large blocks whose size is a multiple of 4 MiB, each grown a
 * little after all were made: every one must grow where it is (mremap into
 * the free space the OS layer leaves after each mapping), not be copied.
 * With the arena window packing mappings back to back, none did (0/16 for
 * 4 MiB + 256 KiB, 0/16 for 8 MiB + 1 MiB, 0/64 for 4 MiB + 64 KiB); the
 * trimmed over-map before it left room by chance. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/shim/shim_check.h"

static void grow_all(int n, size_t mib, size_t grow_kib) {
  const size_t size = mib << 20, grow = grow_kib << 10;
  char* b[64];
  for (int i = 0; i < n; ++i) {
    b[i] = malloc(size);
    CHECK(b[i] != NULL);
    memset(b[i], 0x5a, size);
  }
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    char* q = realloc(b[i], size + grow);
    CHECK(q != NULL);
    CHECK(q[0] == 0x5a && q[size - 1] == 0x5a);
    if (q == b[i]) ++kept;
    b[i] = q;
  }
  printf("%d blocks of %zu MiB + %zu KiB: %d grew in place\n", n, mib, grow_kib, kept);
  CHECK(kept == n);
  for (int i = 0; i < n; ++i) free(b[i]);
}

int main(void) {
  CHECK(require_shim());
  /* In this order: a later round's 4 MiB request may reuse an earlier
   * round's freed mapping of up to four times its size, and realloc then
   * moves a block that would use under half of its mapping (its shrink
   * rule), which is no sign of the window. */
  grow_all(64, 4, 64);
  grow_all(16, 4, 256);
  grow_all(16, 8, 1024);
  puts("ok");
  return 0;
}
