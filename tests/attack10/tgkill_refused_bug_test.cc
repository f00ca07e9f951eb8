// Reader-slot takeover asks the kernel about other threads with
// tgkill(getpid(), tid, 0) (allocator/core/grace.cc, thread_gone()). A
// process whose seccomp policy does not allow tgkill never issued it before
// 98ac80f; now, once 1024 threads have read (each keeps its slot after it
// exits), the first read section of every later thread issues it, up to 1024
// times. Under a policy that answers EPERM, nothing is reclaimed (every later
// thread reads under the overflow lock and pays 1024 refused syscalls per
// read section); under the common default action of such policies (SIGSYS,
// the process is killed) a plain check() kills the process.
#include <doctest/doctest.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

droppable_resource* g_r;
block_ref g_b;

void* one_check(void*) {
  (void)g_r->check(g_b);
  return nullptr;
}

double ns_per_check(int n) {
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; ++i) (void)g_r->check(g_b);
  clock_gettime(CLOCK_MONOTONIC, &b);
  return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

double g_overflow_ns = 0;
void* timed(void*) {
  g_overflow_ns = ns_per_check(200);
  return nullptr;
}

void run_threads(int n) {
  for (int i = 0; i < n; ++i) {
    pthread_t t;
    if (pthread_create(&t, nullptr, one_check, nullptr) != 0) _exit(9);
    pthread_join(t, nullptr);
  }
}

void refuse_tgkill(__u32 action) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, action),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) _exit(8);
}

// Child: 1100 threads read one after another (only one alive at a time), then
// tgkill is refused, then one more thread reads.
int child(__u32 action) {
  droppable_resource r;
  g_r = &r;
  g_b = r.allocate_block(64);
  (void)r.seal(g_b);
  double with_slot = ns_per_check(2000);
  run_threads(1100);
  refuse_tgkill(action);
  pthread_t t;
  if (pthread_create(&t, nullptr, timed, nullptr) != 0) return 9;
  pthread_join(t, nullptr);
  std::fprintf(stderr, "check(): %.0f ns with a slot, %.0f ns on a thread started after tgkill is refused\n",
               with_slot, g_overflow_ns);
  return 0;
}

int run_child(__u32 action) {
  pid_t pid = fork();
  if (pid == 0) _exit(child(action));
  int st = 0;
  waitpid(pid, &st, 0);
  if (WIFSIGNALED(st)) {
    std::fprintf(stderr, "child killed by signal %d\n", WTERMSIG(st));
    return -WTERMSIG(st);
  }
  return WEXITSTATUS(st);
}

}  // namespace

TEST_CASE("tgkill refused with EPERM: check() still works (measures the cost)") {
  CHECK(run_child(SECCOMP_RET_ERRNO | EPERM) == 0);
}

TEST_CASE("tgkill refused with SIGSYS: a thread's first check() must not kill the process") {
  CHECK(run_child(SECCOMP_RET_TRAP) == 0);
}
