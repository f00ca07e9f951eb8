/* Finding candidate: dlclose() of a dlopen()ed libdropalloc.so (the C API)
 * while threads that used it are exiting. Their exit handler is now the
 * destructor of a pthread key of the library; glibc reads the destructor's
 * address and calls it with nothing holding the library loaded, so dlclose
 * can unmap the code (and the registry, in its .bss) under a thread inside
 * retire_table. Before 94ae9e5 the handler was a __cxa_thread_atexit_impl
 * registration naming the library (__dso_handle): glibc does not unload an
 * object with such registrations pending, so dlclose left it mapped until
 * the last of those threads had exited.
 *
 * Each round: dlopen, 16 resources, 12 threads each using every resource
 * (a cache each), the resources destroyed, the threads released to exit at
 * once (they queue on the registry lock in retire_table, inside the
 * library), dlclose a moment later. A SIGSEGV/SIGBUS in a thread fails. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "allocator/dropalloc_c.h"
#include "tests/shim/shim_check.h"


enum { kResources = 16, kThreads = 12 };

static dropalloc_resource* (*p_create)(unsigned);
static void (*p_destroy)(dropalloc_resource*);
static dropalloc_block (*p_alloc)(dropalloc_resource*, size_t, size_t);
static void (*p_free)(dropalloc_resource*, void*);

static dropalloc_resource* g_res[kResources];
static atomic_int g_ready;
static pthread_rwlock_t g_gate = PTHREAD_RWLOCK_INITIALIZER;  /* write-held until the threads may exit */
static volatile sig_atomic_t g_round;
static volatile sig_atomic_t g_closed;  /* dlclose returned this round */
static uintptr_t g_lib_lo, g_lib_hi;

static void on_fault(int sig, siginfo_t* si, void* ctx) {
  (void)ctx;
  char line[200];
  int n = snprintf(line, sizeof line,
                   "round %d: signal %d in thread %d (address %p; the library spanned %#lx-%#lx; dlclose %s)\n",
                   (int)g_round, sig, (int)gettid(), si->si_addr, (unsigned long)g_lib_lo, (unsigned long)g_lib_hi,
                   g_closed ? "had returned" : "had not returned");
  if (n > 0) (void)!write(2, line, (size_t)n);
  _exit(3);
}

/* Resources made and destroyed on a helper thread: dropalloc_create
 * allocates the handle with the library's own operator new, and a first
 * allocation on the main thread registers a __cxa_thread_atexit_impl handler
 * there, which pins the library for good (then dlclose never unloads it). */
static void* make_resources(void* arg) {
  (void)arg;
  for (int k = 0; k < kResources; ++k) CHECK((g_res[k] = p_create(0)) != NULL);
  return NULL;
}

static void* destroy_resources(void* arg) {
  (void)arg;
  for (int k = 0; k < kResources; ++k) p_destroy(g_res[k]);
  return NULL;
}

static void on_helper(void* (*fn)(void*)) {
  pthread_t h;
  CHECK(pthread_create(&h, NULL, fn, NULL) == 0);
  CHECK(pthread_join(h, NULL) == 0);
}

static void* worker(void* arg) {
  (void)arg;
  for (int k = 0; k < kResources; ++k) {
    void* held[24];
    for (int i = 0; i < 24; ++i) held[i] = p_alloc(g_res[k], 16 + (size_t)(i % 12) * 48, 16).ptr;
    for (int i = 0; i < 24; ++i) p_free(g_res[k], held[i]);
  }
  atomic_fetch_add(&g_ready, 1);
  pthread_rwlock_rdlock(&g_gate);
  pthread_rwlock_unlock(&g_gate);
  return NULL;  /* the key destructor (retire_table) runs now */
}

static int lib_range(const char* path) {
  /* Mappings of the library's file (for the report only). */
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512];
  const char* base = strrchr(path, '/');
  base = base ? base + 1 : path;
  g_lib_lo = g_lib_hi = 0;
  int found = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (strstr(line, base) && sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
      if (!found || lo < g_lib_lo) g_lib_lo = lo;
      if (hi > g_lib_hi) g_lib_hi = hi;
      found = 1;
    }
  }
  if (f) fclose(f);
  return found;
}

int main(int argc, char** argv) {
  CHECK(argc == 2);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGILL, &sa, NULL);
  int rounds = argc > 2 ? atoi(argv[2]) : 300;
  int unloaded = 0;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int round = 0; round < rounds; ++round) {
    g_round = round;
    g_closed = 0;
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
      fprintf(stderr, "dlopen: %s\n", dlerror());
      return 1;
    }
    *(void**)&p_create = dlsym(lib, "dropalloc_create");
    *(void**)&p_destroy = dlsym(lib, "dropalloc_destroy");
    *(void**)&p_alloc = dlsym(lib, "dropalloc_alloc");
    *(void**)&p_free = dlsym(lib, "dropalloc_free");
    CHECK(p_create && p_destroy && p_alloc && p_free);
    (void)lib_range(argv[1]);
    on_helper(make_resources);
    atomic_store(&g_ready, 0);
    CHECK(pthread_rwlock_wrlock(&g_gate) == 0);
    pthread_t ts[kThreads];
    for (int t = 0; t < kThreads; ++t) CHECK(pthread_create(&ts[t], NULL, worker, NULL) == 0);
    while (atomic_load(&g_ready) != kThreads) usleep(100);
    on_helper(destroy_resources);
    pthread_rwlock_unlock(&g_gate);
    /* A moment for the first threads to reach their exit handlers. */
    for (volatile int spin = 0; spin < (round % 16) * 2000; ++spin) {
    }
    CHECK(dlclose(lib) == 0);
    g_closed = 1;
    void* still = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
    if (still == NULL) ++unloaded; else dlclose(still);
    for (int t = 0; t < kThreads; ++t) pthread_join(ts[t], NULL);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > 10) {
      rounds = round + 1;
      break;
    }
  }
  printf("%d rounds, library unloaded by dlclose in %d; no exiting thread faulted\n", rounds, unloaded);
  return 0;
}
