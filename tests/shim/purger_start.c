/* Under the preload, a free never starts the background purger thread; the
 * next allocation does. The C library calls free() while holding locks of its
 * own that pthread_create takes again: glibc frees a joined thread's TLS under
 * its stack-cache lock. A forked child that joined its threads hung there for
 * good (free -> purger start -> pthread_create -> the same lock), found by a
 * stress test that failed one run in ten on a loaded machine.
 *
 * A forked child is where the thread is wanted (decay work pending at the
 * fork) and not running. Between the fork and the allocation the child calls
 * nothing that allocates: the thread count is read with raw system calls. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/shim/purger_threads.h"
#include "tests/shim/shim_check.h"

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

enum { kFine, kStartedByFree, kNotStartedByAllocation, kCannotCount };

static int child(void** small, int n_small, void* big) {
  if (purger_threads() != 0) return kCannotCount; /* none survives a fork */
  /* Frees of every kind: a large block, and small blocks allocated before the
   * fork (other threads' tags: the free's slow path). */
  free(big);
  for (int i = 0; i < n_small; ++i) free(small[i]);
  sleep_ms(300); /* time for a started thread to name itself */
  if (purger_threads() != 0) return kStartedByFree;
  void* p = malloc(1 << 20); /* a large allocation: the slow path */
  free(p);
  for (int i = 0; i < 200; ++i) {
    if (purger_threads() == 1) return kFine;
    sleep_ms(10);
  }
  return kNotStartedByAllocation;
}

int main(void) {
  require_shim();
  enum { kSmall = 4096 };
  static void* small[kSmall];
  for (int i = 0; i < kSmall; ++i) {
    small[i] = malloc(256);
    CHECK(small[i] != NULL);
    memset(small[i], 0x5a, 256);
  }
  /* Decay work pending at the fork: a freed large block in the large cache
   * (the shim's decay time, 100 ms, is far off). */
  void* cached = malloc(1 << 20);
  CHECK(cached != NULL);
  memset(cached, 1, 1 << 20);
  void* big = malloc(1 << 20);
  CHECK(big != NULL);
  memset(big, 2, 1 << 20);
  free(cached);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) _exit(child(small, kSmall, big));
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  static const char* what[] = {"fine", "a free started the purger thread",
                               "an allocation did not start the purger thread",
                               "the child saw a purger thread before it freed anything"};
  int code = WEXITSTATUS(status);
  fprintf(stderr, "child: %s\n", code <= kCannotCount ? what[code] : "exited oddly");
  CHECK(code == kFine);
  free(big);
  for (int i = 0; i < kSmall; ++i) free(small[i]);
  return 0;
}
