/* atfork_misc <plugin.so>: pthread_atfork()/__register_atfork() uses the
 * allocator's interposer must pass on unchanged, under fork():
 *  1. a dlopen()ed plugin's allocating handlers run at fork, and after
 *     dlclose() they are gone (no call into unmapped code);
 *  2. __register_atfork() called directly with a null dso handle;
 *  3. threads registering handlers that allocate while the main thread
 *     forks beside allocating threads.
 * A watchdog turns a hang into exit status 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

extern int __register_atfork(void (*)(void), void (*)(void), void (*)(void), void*);

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "FAIL: hung\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static void* volatile g_keep;
static volatile int g_stop;
static int g_direct_runs;

static void churn(void) {
  g_keep = malloc(50);
  free(g_keep);
}
static void direct_child(void) {
  churn();
  ++g_direct_runs;
}

static void fork_and_wait(void) {
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    alarm(10);
    churn();
    _exit(0);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void* registerer(void* arg) {
  (void)arg;
  for (int i = 0; i < 8; ++i) CHECK(pthread_atfork(churn, churn, churn) == 0);
  return NULL;
}

static void* allocator_thread(void* arg) {
  (void)arg;
  while (!g_stop) free(malloc(1000));
  return NULL;
}

int main(int argc, char** argv) {
  require_shim();
  CHECK(argc == 2);
  signal(SIGALRM, on_alarm);
  alarm(30);

  void* h = dlopen(argv[1], RTLD_NOW);
  CHECK(h != NULL);
  int* runs = (int*)dlsym(h, "atfork_plugin_runs");
  CHECK(runs != NULL);
  fork_and_wait();
  CHECK(*runs == 2); /* prepare and parent */
  CHECK(dlclose(h) == 0);
  fork_and_wait(); /* the plugin's handlers would call unmapped code */

  CHECK(__register_atfork(NULL, NULL, direct_child, NULL) == 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) _exit(g_direct_runs == 1 ? 0 : 1);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

  pthread_t a[2], r[3];
  for (int i = 0; i < 2; ++i) CHECK(pthread_create(&a[i], NULL, allocator_thread, NULL) == 0);
  for (int i = 0; i < 3; ++i) CHECK(pthread_create(&r[i], NULL, registerer, NULL) == 0);
  for (int k = 0; k < 20; ++k) fork_and_wait();
  for (int i = 0; i < 3; ++i) CHECK(pthread_join(r[i], NULL) == 0);
  g_stop = 1;
  for (int i = 0; i < 2; ++i) CHECK(pthread_join(a[i], NULL) == 0);
  fork_and_wait();
  alarm(0);
  printf("atfork uses under the interposer: done\n");
  return 0;
}
