/* A library the program links: its constructor runs before the preloaded
 * allocator's constructors (the reader-slot key, the barrier choice, the
 * shim's options) and forks there, with two threads allocating and fork
 * handlers that allocate (registered through the interposer, so the
 * allocator's prefork_all/postfork_child already run). The last child goes
 * on to the remaining constructors and main. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/attack36/early_fork_lib.h"

static void* volatile g_keep;
static volatile int g_stop;
static int g_forks;

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "FAIL: hung forking inside a constructor run before the allocator's\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static void churn(void) {
  g_keep = malloc(100);
  free(g_keep);
  g_keep = malloc(300000);
  free(g_keep);
}

static void* allocate(void* arg) {
  (void)arg;
  while (!g_stop) {
    void* p[32];
    for (int i = 0; i < 32; ++i) p[i] = malloc(16 + 200 * i);
    for (int i = 0; i < 32; ++i) free(p[i]);
  }
  return NULL;
}

int early_fork_lib_forks(void) { return g_forks; }

__attribute__((constructor)) static void fork_early(void) {
  signal(SIGALRM, on_alarm);
  alarm(20);
  pthread_atfork(churn, churn, churn);
  pthread_t t[2];
  for (int i = 0; i < 2; ++i) pthread_create(&t[i], NULL, allocate, NULL);
  for (int k = 0; k < 30; ++k) {
    pid_t pid = fork();
    if (pid < 0) {
      g_forks = -1;
      break;
    }
    if (pid == 0) {
      alarm(10);
      churn();
      pthread_t c;
      g_stop = 1;
      if (pthread_create(&c, NULL, allocate, NULL) != 0) _exit(3);
      pthread_join(c, NULL);
      _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      g_forks = -1;
      break;
    }
    ++g_forks;
  }
  g_stop = 1;
  for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
  g_stop = 0;
  pid_t pid = fork();
  if (pid == 0) {
    alarm(10);
    return; /* the child runs the allocator's constructors and main too */
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) g_forks = -1;
  alarm(0);
}
