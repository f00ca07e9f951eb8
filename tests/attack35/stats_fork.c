/* fork() while another thread prints the allocator's statistics
 * (dropalloc_stats_print), with DROPALLOC_STATS=1 so that every process
 * prints them again at its exit (the shim's destructor).
 *
 * write_stats_report() serialises reports with a spin flag of its own
 * (stats_report.cc, g_snap_busy) that the fork handlers do not take: a child
 * forked while another thread's report is in progress inherits the flag set,
 * with no thread to clear it, and its exit report spun in sched_yield() for
 * good (fixed: the child clears it, stats_report_after_fork()). A watchdog turns a stuck child into exit status 1; ATTACK35_HOLD=1
 * leaves a stuck child alone for 30 s first (to attach a debugger). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

static volatile int g_stop;
static int g_null_fd;

static void* printer(void* arg) {
  (void)arg;
  int (*print)(int, unsigned) = (int (*)(int, unsigned))dlsym(RTLD_DEFAULT, "dropalloc_stats_print");
  CHECK(print != NULL);
  while (!g_stop) (void)print(g_null_fd, 1 /* DROPALLOC_STATS_CLASSES: a longer report */);
  return NULL;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "FAIL: a forked child never finished its exit (stuck in the statistics report)\n";
  (void)!write(2, msg, sizeof msg - 1);
  kill(0, SIGKILL); /* the stuck children too (a process group of its own: see main) */
  _exit(1);
}

int main(int argc, char** argv) {
  require_shim();
  const int forks = argc > 1 ? atoi(argv[1]) : 200;
  g_null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  CHECK(g_null_fd >= 0);
  setpgid(0, 0);
  signal(SIGALRM, on_alarm);
  alarm(30);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, printer, NULL) == 0);
  for (int i = 0; i < forks; ++i) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      /* The exit report goes to stderr: to /dev/null here. */
      dup2(g_null_fd, 2);
      exit(0);
    }
    /* A child that does not finish within 2 s is stuck. */
    int status = 0;
    pid_t got = 0;
    for (int ms = 0; ms < 2000 && (got = waitpid(pid, &status, WNOHANG)) == 0; ++ms) usleep(1000);
    if (got == 0) {
      fprintf(stderr, "FAIL: child %d of %d still running after 2 s\n", i, forks);
      if (getenv("ATTACK35_HOLD")) sleep(30);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      g_stop = 1;
      return 1;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  g_stop = 1;
  CHECK(pthread_join(t, NULL) == 0);
  printf("%d forks beside a thread printing statistics: every child exited\n", forks);
  return 0;
}
