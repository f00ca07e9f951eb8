// tgkill refused by a seccomp filter (SECCOMP_RET_ERRNO). With EPERM (what
// sandboxes return; the default here) a look must take no table for gone:
// live threads keep theirs; tables of exited threads then stay (the
// documented "false when unsure"). With ATTACK37_SECCOMP_ERRNO=ESRCH (a
// filter that answers "no such process") every other thread's live table
// is reaped under it: a new thread then shares a live thread's table.
#include <doctest/doctest.h>

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "allocator/dropalloc.h"
#include "tests/attack37/common.h"

using dropalloc::droppable_resource;

namespace {

bool refuse_tgkill(int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog = {static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  // TSYNC: every thread of the process, the allocator's purger included.
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) == 0;
}

}  // namespace

TEST_CASE("a look never takes a live thread's table when tgkill is refused") {
  const char* e = std::getenv("ATTACK37_SECCOMP_ERRNO");
  const int err = e != nullptr && std::strcmp(e, "ESRCH") == 0 ? ESRCH : EPERM;
  droppable_resource res;
  res.deallocate(res.allocate(64, 8), 64, 8);
  REQUIRE(refuse_tgkill(err));
  // A thread that keeps its table while others come and go.
  std::atomic<int> phase{0};
  const dropalloc::core::tc_table* held_table = nullptr;
  std::thread holder([&] {
    res.deallocate(res.allocate(64, 8), 64, 8);
    held_table = attack37::my_table();
    phase.store(1);
    while (phase.load() != 2) sched_yield();
  });
  while (phase.load() != 1) sched_yield();
  const dropalloc::core::tc_table* mine = attack37::my_table();
  for (int i = 0; i < 8; ++i) std::thread([&] { res.deallocate(res.allocate(64, 8), 64, 8); }).join();
  res.trim();
  const bool main_kept = attack37::on_registry(mine);
  const bool holder_kept = attack37::on_registry(held_table);
  MESSAGE("tgkill refused with " << (err == ESRCH ? "ESRCH" : "EPERM") << ": main's table on the registry "
                                 << main_kept << ", a live thread's " << holder_kept);
  phase.store(2);
  holder.join();
  CHECK(main_kept);
  CHECK(holder_kept);
}
