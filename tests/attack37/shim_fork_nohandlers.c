/* Finding 1 as an ordinary C program under LD_PRELOAD=libdropalloc.so: a
 * single-threaded process makes a child with _Fork() (glibc 2.34+, no atfork
 * handlers; the child of a single-threaded parent may call malloc), the child
 * starts threads, and all of them, the child's main thread included, malloc
 * and free blocks stamped with their own byte. A block found with another
 * thread's stamp was handed to two threads at once: the child's first thread
 * reaped its main thread's live cache table (the table still records the
 * parent's thread id), and a later thread got that table as a spare.
 *
 * With ATTACK37_PLAIN_FORK=1 the child is made with fork() (the control). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

static volatile long g_clobbered = 0;
static pthread_barrier_t g_go;

static void churn(unsigned char stamp) {
  enum { kLive = 64 };
  unsigned char* live[kLive] = {0};
  /* Long enough for the threads to overlap whatever the build's speed. */
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int round = 0;; ++round) {
    if (round % 1024 == 0) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > 500) break;
    }
    int i = round % kLive;
    if (live[i] != NULL) {
      for (int b = 0; b < 48; ++b) {
        if (live[i][b] != stamp) {
          __atomic_fetch_add(&g_clobbered, 1, __ATOMIC_RELAXED);
          break;
        }
      }
      free(live[i]);
    }
    live[i] = malloc(48);
    memset(live[i], stamp, 48);
  }
  for (int i = 0; i < kLive; ++i) free(live[i]);
}

static void* worker(void* arg) {
  free(malloc(64)); /* this thread's table */
  pthread_barrier_wait(&g_go);
  churn((unsigned char)(uintptr_t)arg);
  return NULL;
}

static void* first(void* arg) {
  (void)arg;
  free(malloc(64)); /* its first allocation looks at two tables */
  return NULL;
}

static int child(void) {
  pthread_t t;
  CHECK(pthread_create(&t, NULL, first, NULL) == 0);
  pthread_join(t, NULL);
  enum { kWorkers = 4 };
  pthread_t w[kWorkers];
  pthread_barrier_init(&g_go, NULL, kWorkers + 1);
  for (int i = 0; i < kWorkers; ++i) CHECK(pthread_create(&w[i], NULL, worker, (void*)(uintptr_t)(0x11 * (i + 1))) == 0);
  pthread_barrier_wait(&g_go);
  churn(0xee);
  for (int i = 0; i < kWorkers; ++i) pthread_join(w[i], NULL);
  if (g_clobbered != 0) {
    fprintf(stderr, "child: %ld blocks carried another thread's stamp (handed out twice)\n", g_clobbered);
    return 3;
  }
  return 0;
}

int main(void) {
  require_shim();
  alarm(50);
  free(malloc(64)); /* the main thread's table, with the parent's thread id */
  const int plain = getenv("ATTACK37_PLAIN_FORK") != NULL;
  pid_t pid = plain ? fork() : _Fork();
  CHECK(pid >= 0);
  if (pid == 0) _exit(child());
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  if (WIFSIGNALED(status)) fprintf(stderr, "child killed by signal %d\n", WTERMSIG(status));
  fprintf(stderr, "%s child: status %#x\n", plain ? "fork()" : "_Fork()", status);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  printf("PASS\n");
  return 0;
}
