/* The background purger starts at the first allocation after a free asked
 * for it. Here that allocation is one the C library makes while it holds
 * locks of its own, and the purger's pthread_create runs inside it:
 *
 *   dlopen:          calloc in _dl_new_object, the loader lock (dl_load_lock)
 *                    held; the object loaded has static TLS, so the same
 *                    dlopen then takes the thread-stack cache lock.
 *   pthread_create:  calloc of the new thread's TLS (dtv) in allocate_stack:
 *                    pthread_create inside pthread_create.
 *
 * Both must finish, with the purger running afterwards (DROPALLOC_DECAY_MS=1:
 * a freed 6 MiB block is due for decay at once). Nothing allocates between
 * the free and the call under test.
 *
 * Usage: purger_nested_start dlopen|pthread_create <static TLS object>. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "tests/shim/purger_threads.h"
#include "tests/shim/shim_check.h"

static void* body(void* arg) { return arg; }

int main(int argc, char** argv) {
  require_shim();
  CHECK(argc == 3);
  alarm(20); /* a hang ends as SIGALRM: a failure */
  CHECK(purger_threads() == 0);
  void* big = malloc(6u << 20);
  CHECK(big != NULL);
  ((volatile char*)big)[0] = 1;
  free(big); /* asks for the purger; does not start it */
  if (strcmp(argv[1], "dlopen") == 0) {
    void* h = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL);
    int (*get)(void) = (int (*)(void))dlsym(h, "attack35_static_tls_get");
    CHECK(get != NULL && get() == 35);
  } else {
    CHECK(strcmp(argv[1], "pthread_create") == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, body, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
  }
  /* Started (by the call above; a thread appears in /proc at once). */
  for (int i = 0; i < 200 && purger_threads() != 1; ++i) usleep(5000);
  CHECK(purger_threads() == 1);
  printf("%s: the purger started inside it and the call finished\n", argv[1]);
  return 0;
}
