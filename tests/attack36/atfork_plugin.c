/* dlopen()ed by atfork_misc.c: registers fork handlers that allocate; its
 * dlclose() unregisters them (glibc: __cxa_finalize, by __dso_handle). */
#include <pthread.h>
#include <stdlib.h>

int atfork_plugin_runs;
static void* volatile g_keep;

static void churn(void) {
  g_keep = malloc(200);
  free(g_keep);
  ++atfork_plugin_runs;
}

__attribute__((constructor)) static void plugin_registers(void) { pthread_atfork(churn, churn, churn); }
