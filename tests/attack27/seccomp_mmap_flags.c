// A process under a seccomp filter that allows mmap only with the usual flags
// (MAP_SHARED|MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK|MAP_NORESERVE|MAP_FIXED|
// MAP_DENYWRITE|MAP_LOCKED: the allow-list of Chromium's sandbox,
// sandbox/linux/seccomp-bpf-helpers RestrictMmapFlags, which crashes with
// SIGSYS on anything else), then allocates large blocks and small objects
// through the preloaded malloc (ordinary_os: MAP_PRIVATE|MAP_ANONYMOUS|
// MAP_NORESERVE). Mode "trap": a disallowed flag raises SIGSYS (as the
// sandbox does); mode "errno": it fails with EPERM instead.
// Usage: LD_PRELOAD=libdropalloc.so ./seccomp_mmap_flags [trap|errno]
// The arena window's first version passed MAP_FIXED_NOREPLACE, outside the
// list: killed with SIGSYS (trap). It passes a plain address hint now.
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tests/shim/shim_check.h"

int main(int argc, char** argv) {
  int trap = !(argc > 1 && strcmp(argv[1], "errno") == 0);
  CHECK(require_shim());  /* before the filter: the lookup may map */
  const unsigned allowed = MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE | MAP_FIXED |
                           MAP_DENYWRITE | MAP_LOCKED;
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[3])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, ~allowed, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, trap ? SECCOMP_RET_TRAP : (SECCOMP_RET_ERRNO | EPERM)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    perror("seccomp");
    return 3;
  }
  if (write(1, "sandbox on\n", 11) != 11) return 4;
  unsigned long sum = 0;
  for (int i = 0; i < 200; ++i) {
    char* big = malloc((size_t)(i % 7 + 1) << 20);  // large blocks: a mapping each
    char* small = malloc(100 + i);
    if (!big || !small) { puts("malloc failed"); return 1; }
    big[0] = 1; small[0] = 2;
    sum += (unsigned long)big[0] + small[0];
    free(big);
  }
  printf("ok %lu\n", sum);
  return 0;
}
