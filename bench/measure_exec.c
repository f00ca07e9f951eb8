/* measure_exec: runs one program and writes its wall time and peak resident
 * set, for compare.py's real programs.
 *
 *   measure_exec OUT [NAME=VALUE ...] -- PROGRAM [ARG ...]
 *
 * Sets each NAME=VALUE in the environment PROGRAM starts with (LD_PRELOAD,
 * LD_DEBUG, ...: they reach PROGRAM only, this process is already loaded),
 * forks, execs PROGRAM, waits for it with wait4 and writes one line to OUT:
 *   status=<exit code, or -signal> wall_s=<s> maxrss_kib=<k> utime_s=<s> stime_s=<s>
 * wall_s runs from just before the fork to the end of wait4.
 *
 * Why a process in between: a child's ru_maxrss also counts the pages of the
 * process it was forked from (the forked copy's resident set is recorded when
 * it execs), so a program forked from the Python runner would be charged for
 * the runner's memory. Forked from this small process, the surcharge is this
 * process's resident set, about 1 MiB; compare.py measures /bin/true through
 * here to show it. Exit status: 0 when OUT was written, 2 on bad usage, 1 when
 * the fork or OUT failed; PROGRAM failing to exec shows up as status=127. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(const struct timeval* tv) { return (double)tv->tv_sec + (double)tv->tv_usec / 1e6; }

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s OUT [NAME=VALUE ...] -- PROGRAM [ARG ...]\n", argv[0]);
    return 2;
  }
  int i = 2;
  for (; i < argc && strcmp(argv[i], "--") != 0; ++i) {
    char* eq = strchr(argv[i], '=');
    if (eq == NULL || eq == argv[i]) {
      fprintf(stderr, "measure_exec: not NAME=VALUE: %s\n", argv[i]);
      return 2;
    }
    *eq = '\0';
    if (setenv(argv[i], eq + 1, 1) != 0) {
      perror("measure_exec: setenv");
      return 1;
    }
  }
  if (i + 1 >= argc) {
    fprintf(stderr, "measure_exec: no PROGRAM after --\n");
    return 2;
  }
  char** prog = argv + i + 1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid < 0) {
    perror("measure_exec: fork");
    return 1;
  }
  if (pid == 0) {
    execvp(prog[0], prog);
    fprintf(stderr, "measure_exec: cannot run %s: %s\n", prog[0], strerror(errno));
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) {
      perror("measure_exec: wait4");
      return 1;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
  FILE* out = fopen(argv[1], "w");
  if (out == NULL) {
    perror("measure_exec: open OUT");
    return 1;
  }
  fprintf(out, "status=%d wall_s=%.6f maxrss_kib=%ld utime_s=%.6f stime_s=%.6f\n", code,
          (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, ru.ru_maxrss,
          seconds(&ru.ru_utime), seconds(&ru.ru_stime));
  return fclose(out) == 0 ? 0 : 1;
}
