/* dlopen()ed by first_atfork_lib.c's thread: its constructor runs under the
 * loader lock, lets the main thread start the first registration, then
 * registers handlers of its own. */
#include <pthread.h>
#include <time.h>

#include "tests/attack36/first_atfork_lib.h"

static void nothing(void) {}

__attribute__((constructor)) static void plugin_registers(void) {
  first_atfork_plugin_ctor_running();
  struct timespec ts = {0, 300 * 1000 * 1000};
  nanosleep(&ts, NULL);
  pthread_atfork(nothing, nothing, nothing);
}
