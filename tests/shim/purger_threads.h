/* How many threads of this process are the background purger (named
 * "dropalloc-decay"), read with raw system calls so that counting allocates
 * nothing: a test may count where an allocation would change the answer.
 * -1 if /proc/self/task cannot be read. */
#ifndef DROPALLOC_TESTS_SHIM_PURGER_THREADS_H_
#define DROPALLOC_TESTS_SHIM_PURGER_THREADS_H_

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline int purger_threads(void) {
  int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY);
  if (dir < 0) return -1;
  int found = 0;
  char buf[4096];
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct dirent64* e = (struct dirent64*)(buf + off);
      off += e->d_reclen;
      if (e->d_name[0] == '.') continue;
      char path[64] = "/proc/self/task/";
      strncat(path, e->d_name, 20);
      strcat(path, "/comm");
      int fd = open(path, O_RDONLY);
      if (fd < 0) continue;
      char name[32] = {0};
      if (read(fd, name, sizeof name - 1) > 0 && strncmp(name, "dropalloc-decay", 15) == 0) ++found;
      close(fd);
    }
  }
  close(dir);
  return found;
}

#endif
