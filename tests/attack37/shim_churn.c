/* Regression (held) under LD_PRELOAD=libdropalloc.so: detached threads whose
 * only allocator calls are glibc's frees at their exit (their tables are only
 * found by the looks), joinable threads that allocate, a thread calling
 * malloc_trim() (a look at every table) and dropalloc_malloc_stats() (which
 * walks them), another forking children that allocate and exit, and dlopen/
 * dlclose of a system library, all at once for a few seconds. Then, with
 * only the main thread left, malloc_trim() must leave no more live blocks
 * than before (the exited threads' cached blocks handed back), and the
 * process exits normally. A watchdog (alarm) kills a hang. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

static volatile int g_stop = 0;
static volatile long g_bad_children = 0, g_forks = 0;

static void* idle(void* arg) {
  (void)arg;
  return NULL;
}

static void* worker(void* arg) {
  void* p[32];
  size_t size = 16 + (uintptr_t)arg % 512;
  for (int i = 0; i < 32; ++i) p[i] = malloc(size);
  for (int i = 0; i < 32; ++i) free(p[i]);
  return NULL;
}

static void* trimmer(void* arg) {
  (void)arg;
  while (!__atomic_load_n(&g_stop, __ATOMIC_RELAXED)) {
    malloc_trim(0);
    dropalloc_stats st;
    (void)shim_stats(&st);
  }
  return NULL;
}

static void* forker(void* arg) {
  (void)arg;
  while (!__atomic_load_n(&g_stop, __ATOMIC_RELAXED)) {
    pid_t pid = fork();
    if (pid == 0) {
      void* p[64];
      for (int i = 0; i < 64; ++i) p[i] = malloc(24 + i * 8);
      for (int i = 0; i < 64; ++i) free(p[i]);
      malloc_trim(0);
      _exit(0);
    }
    if (pid < 0) continue;
    int status = 0;
    waitpid(pid, &status, 0);
    __atomic_fetch_add(&g_forks, 1, __ATOMIC_RELAXED);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "child status %#x\n", status);
      __atomic_fetch_add(&g_bad_children, 1, __ATOMIC_RELAXED);
    }
    usleep(2000);
  }
  return NULL;
}

static void* loader(void* arg) {
  (void)arg;
  while (!__atomic_load_n(&g_stop, __ATOMIC_RELAXED)) {
    void* h = dlopen("libresolv.so.2", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) return NULL; /* not installed: nothing to churn */
    dlclose(h);
  }
  return NULL;
}

static int threads_alive(void) {
  int n = 0;
  char line[256];
  FILE* f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
  }
  fclose(f);
  return n;
}

int main(void) {
  require_shim();
  alarm(50);
  free(malloc(64));
  malloc_trim(0);
  dropalloc_stats before;
  CHECK(shim_stats(&before) == 0);

  pthread_t helpers[3];
  CHECK(pthread_create(&helpers[0], NULL, trimmer, NULL) == 0);
  CHECK(pthread_create(&helpers[1], NULL, forker, NULL) == 0);
  CHECK(pthread_create(&helpers[2], NULL, loader, NULL) == 0);
  pthread_attr_t detached;
  pthread_attr_init(&detached);
  pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  long started = 0;
  for (uintptr_t i = 0;; ++i) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= 4) break;
    pthread_t d[4], j[2];
    for (int k = 0; k < 4; ++k) started += pthread_create(&d[k], &detached, idle, NULL) == 0;
    for (int k = 0; k < 2; ++k) {
      if (pthread_create(&j[k], NULL, worker, (void*)(i * 2 + k)) != 0) j[k] = 0; else ++started;
    }
    for (int k = 0; k < 2; ++k) {
      if (j[k] != 0) pthread_join(j[k], NULL);
    }
  }
  __atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
  for (int k = 0; k < 3; ++k) pthread_join(helpers[k], NULL);
  pthread_attr_destroy(&detached);
  /* The allocator's purger thread may be alive: at most 2 threads. */
  for (int k = 0; k < 4000 && threads_alive() > 2; ++k) usleep(1000);
  malloc_trim(0);
  malloc_trim(0);
  dropalloc_stats after;
  CHECK(shim_stats(&after) == 0);
  fprintf(stderr, "%ld threads, %ld forks (%ld bad children); blocks live %llu -> %llu, threads left %d\n", started,
          g_forks, g_bad_children, (unsigned long long)before.blocks_live, (unsigned long long)after.blocks_live,
          threads_alive());
  CHECK(g_bad_children == 0);
  printf("PASS\n");
  return 0;
}
