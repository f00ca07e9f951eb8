/* The C API through pkg-config: a resource of droppable blocks, a block
 * written, sealed, dropped (simulated) and found dropped. Exits 0 when each
 * answer is the documented one. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "allocator/dropalloc_c.h"

static int expect(int ok, const char* what) {
  printf("%-40s %s\n", what, ok ? "ok" : "FAILED");
  return ok;
}

int main(void) {
  printf("dropalloc %s\n", dropalloc_version());
  int ok = expect(strcmp(dropalloc_version(), DROPALLOC_VERSION_STRING) == 0, "library version = header version");
  ok &= expect(dropalloc_shim_active() == 1, "malloc served by dropalloc");

  dropalloc_resource* r = dropalloc_create(0);
  if (r == NULL) {
    perror("dropalloc_create");
    return 1;
  }
  dropalloc_block b = dropalloc_alloc(r, 16384, 0);
  if (b.ptr == NULL) {
    perror("dropalloc_alloc");
    return 1;
  }
  memset(b.ptr, 0x5a, 16384);
  ok &= expect(dropalloc_seal(r, b.ptr) == DROPALLOC_INTACT, "sealed: intact");
  ok &= expect(dropalloc_drop_for_testing(r, b.ptr, 4096) == 0, "first page dropped (simulated)");
  dropalloc_state s = dropalloc_check(r, b.ptr, b.generation);
  printf("check: %s\n", dropalloc_state_name(s));
  ok &= expect(s == DROPALLOC_DROPPED, "drop check: dropped");
  dropalloc_free(r, b.ptr);
  dropalloc_destroy(r);
  return ok ? 0 : 1;
}
