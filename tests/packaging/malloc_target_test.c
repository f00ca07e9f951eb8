/* cc_test(malloc = "//allocator:malloc"): dropalloc is this program's malloc,
 * and the shim is linked into the executable itself (not a shared library
 * Bazel made of a dependency), as //allocator:malloc promises. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/dropalloc_c.h"

static int first_object(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  *(ElfW(Addr)*)data = info->dlpi_addr; /* the main program comes first */
  return 1;
}

/* Whether code at p belongs to the executable rather than to a shared object. */
static int in_executable(void* p, const char* what) {
  Dl_info info;
  if (dladdr(p, &info) == 0) {
    printf("FAIL: dladdr(%s) found no object\n", what);
    return 0;
  }
  ElfW(Addr) exe_base = 0;
  dl_iterate_phdr(first_object, &exe_base);
  /* A PIE's load address is dlpi_addr; a non-PIE executable reports 0 there. */
  int ok = (ElfW(Addr))info.dli_fbase == exe_base || (exe_base == 0 && strstr(info.dli_fname, ".so") == NULL);
  printf("%s is in %s: %s\n", what, info.dli_fname, ok ? "the executable" : "a shared object");
  return ok;
}

int main(void) {
  int ok = 1;
  void* p = malloc(24);
  if (dropalloc_shim_active() != 1) {
    printf("FAIL: malloc is not dropalloc's\n");
    ok = 0;
  }
  free(p);
  ok &= in_executable((void*)&dropalloc_shim_active, "dropalloc_shim_active");
  ok &= in_executable((void*)&dropalloc_version, "dropalloc_version");
  printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
