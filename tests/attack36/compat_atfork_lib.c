/* A library the program links (its constructor runs before the preloaded
 * allocator's) that registers fork handlers the way a binary linked before
 * glibc 2.3.2 does: through libc's exported pthread_atfork@GLIBC_2.2.5, not
 * libc_nonshared's wrapper. That function calls libc's __register_atfork
 * inside libc, so the allocator's interposer never sees the call and these
 * handlers come before the allocator's. ATTACK36_COMPAT_MODE: "prepare",
 * "parent" or "child" allocates in that handler (anything else: none). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "tests/attack36/compat_atfork_lib.h"

static void* volatile g_keep;
static int g_registered;

static void churn(void) {
  g_keep = malloc(100);
  free(g_keep);
}

int compat_atfork_registered(void) { return g_registered; }

typedef int (*atfork_fn)(void (*)(void), void (*)(void), void (*)(void));

__attribute__((constructor)) static void register_compat(void) {
  atfork_fn f = (atfork_fn)dlvsym(RTLD_DEFAULT, "pthread_atfork", "GLIBC_2.2.5");
  if (f == NULL) return;
  const char* m = getenv("ATTACK36_COMPAT_MODE");
  int mode = m == NULL ? 0 : strcmp(m, "prepare") == 0 ? 1 : strcmp(m, "parent") == 0 ? 2 : strcmp(m, "child") == 0 ? 3 : 0;
  g_registered = f(mode == 1 ? churn : NULL, mode == 2 ? churn : NULL, mode == 3 ? churn : NULL) == 0;
}
