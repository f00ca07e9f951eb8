/* Lock order between the C library's loader lock and its thread-stack cache
 * lock, with libdropalloc.so preloaded.
 *
 * glibc takes them in this order: dlopen() of an object with static TLS holds
 * dl_load_lock and takes dl_stack_cache_lock (_dl_init_static_tls walks every
 * thread's TLS). An exiting detached thread holds dl_stack_cache_lock while
 * it frees the TLS (dtv) of cached thread stacks once the cache passes 40 MiB
 * (__nptl_deallocate_stack -> queue_stack -> __nptl_free_stacks -> free).
 *
 * The detached threads here never allocate, so that free is their first
 * allocator call: it makes the thread's cache table (make_current ->
 * thread_cache) and registers its exit handler (call_at_thread_exit). With
 * the allocator's pthread key in place that is pthread_setspecific, which
 * takes no lock (ATTACK35_MANY_KEYS unset). Without the key
 * (ATTACK35_MANY_KEYS=1: the program's library made 40 keys before the
 * allocator's constructor ran) it was __cxa_thread_atexit_impl, which takes
 * dl_load_lock under dl_stack_cache_lock: the reverse order, and the process
 * hung with one thread in dlopen and one in free. Now no handler is
 * registered there; both settings must pass.
 *
 * Usage: stack_cache_dlopen <static TLS object> [seconds]. A watchdog turns a
 * hang into exit status 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "tests/attack35/many_keys_lib.h"
#include "tests/shim/shim_check.h"

static const char* g_object;
static sem_t g_go;
static volatile int g_stop;

static void* load_loop(void* arg) {
  (void)arg;
  while (!g_stop) {
    void* h = dlopen(g_object, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
      fprintf(stderr, "dlopen(%s): %s\n", g_object, dlerror());
      exit(2);
    }
    int (*get)(void) = (int (*)(void))dlsym(h, "attack35_static_tls_get");
    CHECK(get != NULL && get() == 35);
    dlclose(h);
  }
  return NULL;
}

/* Allocates nothing: its first allocator call is glibc's free of other
 * threads' TLS at its exit. */
static void* idle(void* arg) {
  (void)arg;
  while (sem_wait(&g_go) != 0) {
  }
  return NULL;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] =
      "FAIL: hung (a thread freeing cached stacks under dl_stack_cache_lock waits for dl_load_lock, "
      "held by dlopen, which waits for dl_stack_cache_lock)\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

int main(int argc, char** argv) {
  require_shim();
  CHECK(argc >= 2);
  g_object = argv[1];
  const int seconds = argc > 2 ? atoi(argv[2]) : 2;
  signal(SIGALRM, on_alarm);
  alarm((unsigned)seconds + 20);
  CHECK(sem_init(&g_go, 0, 0) == 0);
  pthread_t loader;
  CHECK(pthread_create(&loader, NULL, load_loop, NULL) == 0);
  pthread_attr_t detached;
  CHECK(pthread_attr_init(&detached) == 0);
  CHECK(pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED) == 0);
  /* Batches of 8 threads with default (8 MiB) stacks, released together: the
   * stack cache passes its 40 MiB bound and exiting threads trim it. */
  const time_t end = time(NULL) + seconds;
  long rounds = 0;
  while (time(NULL) < end) {
    for (int i = 0; i < 8; ++i) {
      pthread_t t;
      CHECK(pthread_create(&t, &detached, idle, NULL) == 0);
    }
    for (int i = 0; i < 8; ++i) CHECK(sem_post(&g_go) == 0);
    usleep(1000);
    ++rounds;
  }
  g_stop = 1;
  CHECK(pthread_join(loader, NULL) == 0);
  alarm(0);
  printf("%ld rounds of 8 detached threads beside dlopen/dlclose; %d keys made before the allocator's\n", rounds,
         many_keys_made());
  return 0;
}
