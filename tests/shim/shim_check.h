/* Shared by the C programs run under the shim: a failing check prints where
 * and exits 1; require_shim() fails unless libdropalloc.so is the malloc. */
#ifndef DROPALLOC_TESTS_SHIM_CHECK_H_
#define DROPALLOC_TESTS_SHIM_CHECK_H_

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "allocator/dropalloc_c.h"

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

/* Looked up at run time: the programs are linked against libc only. */
static inline int shim_active(void) {
  int (*active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "dropalloc_shim_active");
  return active != NULL && active() == 1;
}

static inline int shim_stats(dropalloc_stats* out) {
  int (*stats)(dropalloc_stats*) = (int (*)(dropalloc_stats*))dlsym(RTLD_DEFAULT, "dropalloc_malloc_stats");
  return stats == NULL ? -1 : stats(out);
}

/* DROPALLOC_TEST_REQUIRE_SHIM=1 (set by run_preloaded.sh): the preload must have
 * taken, or every other check would silently test libc's malloc. */
static inline int require_shim(void) {
  const char* v = getenv("DROPALLOC_TEST_REQUIRE_SHIM");
  int want = v != NULL && v[0] == '1';
  if (want && !shim_active()) {
    fprintf(stderr, "FAIL: DROPALLOC_TEST_REQUIRE_SHIM=1 but libdropalloc.so is not this process's malloc\n");
    exit(1);
  }
  return shim_active();
}

#endif
