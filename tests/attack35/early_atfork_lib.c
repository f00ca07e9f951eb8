/* A shared library the test program links (DT_NEEDED), like any library a
 * program is built against. The dynamic loader runs its constructor before
 * the constructor of a preloaded libdropalloc.so (a preloaded library is
 * initialised after the program's other libraries that do not depend on it),
 * so the fork handlers registered here would come before the allocator's
 * if the allocator did not register its own at the first registration.
 *
 * ATTACK35_ATFORK_MODE chooses which handler allocates: "prepare", "parent"
 * or "child" (anything else: none). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tests/attack35/early_atfork_lib.h"

static void* volatile g_keep;
static int g_mode; /* 1 prepare, 2 parent, 3 child */
static int g_handlers_run;

static void churn(void) {
  g_keep = malloc(100);
  free(g_keep);
  g_keep = calloc(3, 1000);
  free(g_keep);
  ++g_handlers_run;
}

static void on_prepare(void) {
  if (g_mode == 1) churn();
}
static void on_parent(void) {
  if (g_mode == 2) churn();
}
static void on_child(void) {
  if (g_mode == 3) churn();
}

__attribute__((constructor)) static void register_early(void) {
  const char* m = getenv("ATTACK35_ATFORK_MODE");
  if (m != NULL) {
    if (strcmp(m, "prepare") == 0) g_mode = 1;
    if (strcmp(m, "parent") == 0) g_mode = 2;
    if (strcmp(m, "child") == 0) g_mode = 3;
  }
  pthread_atfork(on_prepare, on_parent, on_child);
}

int early_atfork_handlers_run(void) { return g_handlers_run; }
