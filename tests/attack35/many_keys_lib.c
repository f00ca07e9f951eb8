/* A shared library the test program links (DT_NEEDED): its constructor runs
 * before the preloaded libdropalloc.so's and, with ATTACK35_MANY_KEYS=1,
 * creates 40 pthread keys first. The allocator's own keys (thread exit,
 * reader slots) then land at 40 and above, where pthread_setspecific may
 * allocate, so it does without them (thread_exit.cc). A thread's first
 * allocator call used to register its exit handler with
 * __cxa_thread_atexit_impl there, which takes the dynamic loader's lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tests/attack35/many_keys_lib.h"

static int g_made;

__attribute__((constructor)) static void make_many_keys(void) {
  const char* v = getenv("ATTACK35_MANY_KEYS");
  if (v == NULL || strcmp(v, "1") != 0) return;
  for (int i = 0; i < 40; ++i) {
    pthread_key_t key;
    if (pthread_key_create(&key, NULL) == 0) ++g_made;
  }
}

int many_keys_made(void) { return g_made; }
