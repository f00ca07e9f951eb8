/* A library the program links (DT_NEEDED): its constructor runs before the
 * preloaded allocator's, so its pthread_atfork() is the process's first
 * registration and the allocator's __register_atfork registers the
 * allocator's handlers from inside it (state "being registered"), which
 * first looks up libc's __register_atfork with dlsym(), which takes the
 * loader lock.
 *
 * Meanwhile a thread it started dlopen()s a plugin (argv[1]) whose
 * constructor, run under the loader lock, calls pthread_atfork(): it waits
 * for the registration in progress, which waits for the loader lock.
 * glibc's malloc: no hang. A watchdog turns the hang into exit status 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "tests/attack36/first_atfork_lib.h"

static volatile int g_plugin_ctor_running;
static int g_result;

void first_atfork_plugin_ctor_running(void) { g_plugin_ctor_running = 1; }
int first_atfork_lib_result(void) { return g_result; }

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] =
      "FAIL: hung: the first pthread_atfork() (allocator's registration in progress, waiting for the loader "
      "lock in dlsym) against a dlopen() whose constructor calls pthread_atfork() (waiting for that "
      "registration)\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static void* load_plugin(void* path) {
  if (dlopen((const char*)path, RTLD_NOW) == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    _exit(2);
  }
  return NULL;
}

static void nothing(void) {}

/* glibc passes argc and argv to constructors. */
__attribute__((constructor)) static void first_registration(int argc, char** argv) {
  if (argc < 2) return;
  signal(SIGALRM, on_alarm);
  alarm(10);
  pthread_t t;
  if (pthread_create(&t, NULL, load_plugin, argv[1]) != 0) _exit(2);
  while (!g_plugin_ctor_running) sched_yield();
  pthread_atfork(nothing, nothing, nothing); /* the first registration of the process */
  pthread_join(t, NULL);
  alarm(0);
  g_result = 1;
}
