/* Linked against libdropalloc.so (dropalloc::dropalloc): the program's malloc
 * is dropalloc's. Exits 0 when it is. */
#include <stdio.h>
#include <stdlib.h>

#include "allocator/dropalloc_c.h"

int main(void) {
  printf("dropalloc %s, header %s\n", dropalloc_version(), DROPALLOC_VERSION_STRING);
  void* p = malloc(100);
  int ours = dropalloc_shim_active();
  free(p);
  printf("malloc served by dropalloc: %s\n", ours == 1 ? "yes" : "no");
  return p != NULL && ours == 1 ? 0 : 1;
}
