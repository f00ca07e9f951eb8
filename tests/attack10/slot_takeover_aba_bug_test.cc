// A reader slot taken over from an exited thread by two threads at once, one
// of them the exited thread's successor under the same thread id (ABA on
// reader_slot::owner).
//
// claim_slot() (allocator/core/grace.cc) reads a slot's owner X, sees epoch 0,
// asks the kernel whether X still exists (tgkill(getpid(), X, 0) == ESRCH),
// then compare-exchanges owner X -> itself. Between the kernel's answer and
// the compare-exchange the claimer can be preempted. Meanwhile:
//   C2 takes the slot over (X -> C2) and exits;
//   a new thread X' is created with X's thread id, finds no free slot, takes
//   the slot over from the dead C2 (C2 -> X) and enters a read section.
// The stalled claimer C1 resumes: owner is X again, its compare-exchange
// succeeds, and C1 and X' now share one slot. C1's read section finds the
// slot's epoch non-zero and takes itself for nested, so it publishes nothing;
// when X' leaves its section, wait_for_readers() no longer waits for C1, which
// is still inside a section that began before: a reader can then hold a
// pointer into an arena that is unmapped.
//
// To make the schedule deterministic, the claimer's tgkill(.., X, 0) is
// delivered to this test through a seccomp user notification: the test
// verifies itself that X does not exist at that moment (so ESRCH is the
// kernel's true answer then), stages the takeovers, and only then lets the
// claimer return ESRCH. That is the same as the claimer being preempted right
// after its tgkill. Thread-id reuse is forced with ns_last_pid inside a fresh
// PID namespace (root only; the test skips otherwise).
#include <doctest/doctest.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "allocator/core/grace.h"

using dropalloc::core::read_section;
using dropalloc::core::wait_for_readers;

namespace {

constexpr int kSlots = 1024;

int gettid_() { return static_cast<int>(syscall(SYS_gettid)); }
bool gone(int tid) { return syscall(SYS_tgkill, getpid(), tid, 0) != 0 && errno == ESRCH; }
void wait_gone(int tid) {
  while (!gone(tid)) usleep(100);
}

std::atomic<bool> g_release_holders{false};
std::atomic<int> g_claimed{0};

void* holder(void*) {
  { read_section r; }  // claims a slot, keeps it while alive
  g_claimed.fetch_add(1);
  while (!g_release_holders.load()) usleep(1000);
  return nullptr;
}

std::atomic<int> g_victim_tid{0};
void* victim(void*) {
  { read_section r; }
  g_victim_tid.store(gettid_());
  return nullptr;
}

void* c2(void*) {
  { read_section r; }  // no free slot: takes over the dead victim's
  return nullptr;
}

std::atomic<int> g_xprime_tid{0};
std::atomic<bool> g_xprime_in{false}, g_xprime_leave{false};
void* xprime(void*) {
  g_xprime_tid.store(gettid_());
  {
    read_section r;  // takes over C2's slot, now owned by this thread's id X
    g_xprime_in.store(true);
    while (!g_xprime_leave.load()) usleep(100);
  }
  return nullptr;
}

std::atomic<int> g_listener{-1};
std::atomic<bool> g_c1_in{false}, g_c1_done{false};
void* c1(void*) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  int fd = static_cast<int>(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog));
  if (fd < 0) {
    perror("seccomp");
    _exit(3);
  }
  g_listener.store(fd);
  {
    read_section r;  // claim_slot(): stalls in tgkill(.., X, 0)
    g_c1_in.store(true);
    usleep(500 * 1000);  // still reading
    g_c1_done.store(true);
  }
  return nullptr;
}

pthread_t spawn(void* (*fn)(void*)) {
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 64 * 1024);
  pthread_t t;
  if (pthread_create(&t, &a, fn, nullptr) != 0) _exit(4);
  pthread_attr_destroy(&a);
  return t;
}

// Runs as pid 1 of a fresh PID namespace. Exit 0: wait_for_readers() waited
// for C1; 1: it returned while C1 was still in its section; 2: skipped.
int scenario() {
  { read_section r; }  // the main thread's slot
  std::vector<pthread_t> hs;
  for (int i = 0; i < kSlots - 2; ++i) hs.push_back(spawn(holder));
  while (g_claimed.load() < kSlots - 2) usleep(1000);
  pthread_join(spawn(victim), nullptr);  // slot kSlots-1, owner X now dead
  const int x = g_victim_tid.load();
  wait_gone(x);

  pthread_t tc1 = spawn(c1);
  while (g_listener.load() < 0) usleep(100);
  const int fd = g_listener.load();
  bool staged = false;
  while (!staged) {
    struct seccomp_notif req;
    std::memset(&req, 0, sizeof req);
    if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
      perror("NOTIF_RECV");
      return 3;
    }
    struct seccomp_notif_resp resp;
    std::memset(&resp, 0, sizeof resp);
    resp.id = req.id;
    if (static_cast<int>(req.data.args[1]) != x) {
      resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;  // a live holder: real answer
    } else {
      // The kernel's answer at this moment is ESRCH: X has exited.
      if (!gone(x)) return 3;
      // C1 is "preempted" here. C2 takes the slot over and exits.
      pthread_join(spawn(c2), nullptr);
      // The C2 thread's id is gone once the kernel released it.
      // (All other slots are held by live threads.)
      // X' gets X's id.
      int fdp = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
      if (fdp < 0) return 2;
      char buf[32];
      int n = std::snprintf(buf, sizeof buf, "%d", x - 1);
      if (write(fdp, buf, n) != n) return 2;
      close(fdp);
      pthread_t tx = spawn(xprime);
      while (!g_xprime_in.load()) {
        if (g_xprime_tid.load() != 0 && g_xprime_tid.load() != x) {
          std::fprintf(stderr, "new thread got id %d, not %d\n", g_xprime_tid.load(), x);
          return 2;
        }
        usleep(100);
      }
      std::fprintf(stderr, "thread id %d reused by a new thread inside a read section\n", x);
      // C1 resumes with the answer it got while X was dead.
      resp.error = -ESRCH;
      if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0) return 3;
      while (!g_c1_in.load()) usleep(100);
      g_xprime_leave.store(true);
      pthread_join(tx, nullptr);
      staged = true;
      break;
    }
    if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0) return 3;
  }
  // C1 began its section before this grace period: it must be waited for.
  wait_for_readers();
  const bool waited = g_c1_done.load();
  std::fprintf(stderr, "wait_for_readers() returned; C1 still inside its read section: %s\n",
               waited ? "no" : "YES");
  pthread_join(tc1, nullptr);
  g_release_holders.store(true);
  for (pthread_t t : hs) pthread_join(t, nullptr);
  return waited ? 0 : 1;
}

}  // namespace

TEST_CASE("a slot taken over from an exited thread is never shared by two live threads") {
  if (geteuid() != 0 || unshare(CLONE_NEWPID) != 0) {
    MESSAGE("skipped: needs root for a PID namespace");
    return;
  }
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(scenario());
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 2) {
    MESSAGE("skipped: thread ids cannot be steered (ns_last_pid)");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
}
