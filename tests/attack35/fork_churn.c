/* fork() from a thread while other threads allocate and free (small, large,
 * realloc), start and join threads, exit detached, and the background purger
 * runs (DROPALLOC_DECAY_MS small); each child allocates, starts and joins a
 * thread (the purger may start there too) and exits through exit(). Every
 * child must finish within 5 s and the whole run within the watchdog.
 *
 * Usage: fork_churn [forks]. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

static volatile int g_stop;

static uint64_t next(uint64_t* s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void* worker(void* arg) {
  uint64_t seed = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  void* slots[64] = {0};
  while (!g_stop) {
    uint64_t r = next(&seed);
    int i = (int)(r % 64);
    size_t size = (r >> 8) % 8 == 0 ? ((r >> 16) % (1u << 20)) : ((r >> 16) % 512);
    if (slots[i] == NULL) {
      slots[i] = (r >> 40) % 3 == 0 ? calloc(1, size + 1) : malloc(size + 1);
      CHECK(slots[i] != NULL);
      memset(slots[i], 0x5a, size < 64 ? size : 64);
    } else if ((r >> 40) % 4 == 0) {
      void* q = realloc(slots[i], size + 1);
      CHECK(q != NULL);
      slots[i] = q;
    } else {
      free(slots[i]);
      slots[i] = NULL;
    }
  }
  for (int i = 0; i < 64; ++i) free(slots[i]);
  return NULL;
}

static void* short_lived(void* arg) {
  free(malloc((size_t)(uintptr_t)arg));
  return NULL;
}

static void* spawner(void* arg) {
  (void)arg;
  pthread_attr_t detached;
  pthread_attr_init(&detached);
  pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
  for (uintptr_t n = 1; !g_stop; ++n) {
    pthread_t t;
    if (pthread_create(&t, n % 2 ? &detached : NULL, short_lived, (void*)(n % 5000)) != 0) continue;
    if (n % 2 == 0) pthread_join(t, NULL);
  }
  return NULL;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "FAIL: watchdog: the run hung\n";
  (void)!write(2, msg, sizeof msg - 1);
  kill(0, SIGKILL);
  _exit(1);
}

int main(int argc, char** argv) {
  require_shim();
  const int forks = argc > 1 ? atoi(argv[1]) : 60;
  setpgid(0, 0);
  signal(SIGALRM, on_alarm);
  alarm(50);
  pthread_t threads[4];
  for (uintptr_t i = 0; i < 3; ++i) CHECK(pthread_create(&threads[i], NULL, worker, (void*)(i + 1)) == 0);
  CHECK(pthread_create(&threads[3], NULL, spawner, NULL) == 0);
  for (int i = 0; i < forks; ++i) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      alarm(0);
      void* p = malloc(3000);
      void* big = malloc(300000);
      free(p);
      pthread_t t;
      if (pthread_create(&t, NULL, short_lived, (void*)100) == 0) pthread_join(t, NULL);
      free(big);
      exit(0);
    }
    int status = 0;
    pid_t got = 0;
    for (int ms = 0; ms < 5000 && (got = waitpid(pid, &status, WNOHANG)) == 0; ++ms) usleep(1000);
    if (got == 0) {
      fprintf(stderr, "FAIL: child %d (pid %d) still running after 5 s\n", i, (int)pid);
      if (getenv("ATTACK35_HOLD")) sleep(60);
      kill(pid, SIGKILL);
      return 1;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    usleep(2000);
  }
  g_stop = 1;
  for (int i = 0; i < 4; ++i) CHECK(pthread_join(threads[i], NULL) == 0);
  printf("%d forks beside allocating, spawning and purging threads: every child exited\n", forks);
  return 0;
}
