/* fork() in a program whose own shared library registered pthread_atfork
 * handlers that allocate (early_atfork_lib.c), run with libdropalloc.so
 * preloaded.
 *
 * glibc runs prepare handlers in the reverse order of registration, parent
 * and child handlers in the order of registration. The library's constructor
 * runs before the allocator's; were its handlers registered first, its
 * prepare handler would run after the allocator's prefork_all() has taken
 * every allocator lock, and its parent and child handlers before the
 * allocator's handlers release them: a malloc there waited for a lock its own
 * thread held (fixed: allocator/shim/fork_order.cc registers the allocator's
 * first). The program is single-threaded; glibc's own malloc forks it fine.
 * A watchdog (alarm) turns a hang into exit status 1. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/attack35/early_atfork_lib.h"
#include "tests/shim/shim_check.h"

static volatile pid_t g_child = 0;

static void on_alarm(int sig) {
  (void)sig;
  if (g_child > 0) kill(g_child, SIGKILL); /* it may be the one stuck */
  static const char msg[] =
      "FAIL: fork() hung: a pthread_atfork handler registered before the allocator's allocated "
      "while the allocator's fork handlers held its locks\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

int main(void) {
  require_shim();
  signal(SIGALRM, on_alarm);
  alarm(20);
  for (int i = 0; i < 3; ++i) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    g_child = pid;
    if (pid == 0) {
      alarm(20); /* pending alarms are not inherited */
      void* p = malloc(64);
      free(p);
      _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_child = 0;
  }
  alarm(0);
  printf("three forks done; library handlers allocated %d times in the parent\n", early_atfork_handlers_run());
  return 0;
}
