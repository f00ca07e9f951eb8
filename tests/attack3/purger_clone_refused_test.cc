// When the purger thread cannot be created (a seccomp filter refuses clone,
// as sandboxes and thread limits do), nothing crashes or hangs: allocation,
// free, seal, check and trim go on working, every live block keeps its bytes,
// and the signal mask of the thread that tried to start the purger is as it
// was. Runs in a forked child so the filter stays there.
#include <doctest/doctest.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

#ifndef __NR_clone3
#define __NR_clone3 435
#endif

// clone and clone3 fail with EAGAIN; everything else is allowed.
bool refuse_clone() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAGAIN & SECCOMP_RET_DATA)),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

int child() {
  if (!refuse_clone()) return 2;
  sigset_t before, after;
  sigemptyset(&before);
  sigaddset(&before, SIGUSR1);
  pthread_sigmask(SIG_SETMASK, &before, nullptr);

  dropalloc::resource_options o;
  o.background_decay = true;
  o.empty_arena_decay_ms = 1;
  droppable_resource res(o);
  std::vector<block_ref> kept;
  for (int round = 0; round < 50; ++round) {
    std::vector<void*> ps;
    for (int i = 0; i < 500; ++i) {
      ps.push_back(res.allocate(200, 8));
      std::memset(ps.back(), 0x33, 200);
    }
    block_ref b = res.allocate_block(3000);
    std::memset(b.ptr, round + 1, 3000);
    if (res.seal(b.ptr) != block_state::intact) return 3;
    kept.push_back(b);
    for (void* p : ps) res.deallocate(p, 200, 8);
    void* big = res.allocate(1 << 20, 8);
    std::memset(big, 7, 1 << 20);
    res.deallocate(big, 1 << 20, 8);
    if (round % 10 == 0) res.trim();
  }
  pthread_sigmask(SIG_SETMASK, nullptr, &after);
  if (sigismember(&after, SIGUSR1) != 1 || sigismember(&after, SIGUSR2) != 0) return 4;
  for (std::size_t i = 0; i < kept.size(); ++i) {
    auto* p = static_cast<unsigned char*>(kept[i].ptr);
    for (int k = 0; k < 3000; ++k) {
      if (p[k] != static_cast<unsigned char>(i + 1)) return 5;
    }
    if (res.check(kept[i].ptr, kept[i].generation) != block_state::intact) return 6;
    res.deallocate(kept[i].ptr, 3000);
  }
  return 0;
}

}  // namespace

TEST_CASE("a refused purger thread leaves every operation working") {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(child());
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
