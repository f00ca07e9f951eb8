/* fork() with handlers registered through glibc's compat pthread_atfork
 * (compat_atfork_lib.c). A watchdog turns a hang into exit status 1. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/attack36/compat_atfork_lib.h"
#include "tests/shim/shim_check.h"

static volatile pid_t g_child;

static void on_alarm(int sig) {
  (void)sig;
  if (g_child > 0) kill(g_child, SIGKILL);
  static const char msg[] =
      "FAIL: fork() hung: a handler registered through the compat pthread_atfork@GLIBC_2.2.5 (not seen by "
      "the allocator's __register_atfork) allocated while the allocator's fork handlers held its locks\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

int main(void) {
  require_shim();
  CHECK(compat_atfork_registered() == 1);
  signal(SIGALRM, on_alarm);
  alarm(10);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    alarm(10);
    free(malloc(64));
    _exit(0);
  }
  g_child = pid;
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  alarm(0);
  printf("fork with a compat-registered handler: done\n");
  return 0;
}
