// A thread interrupted in the middle of a batch it is unmapping
// (unmap_deferred_now -> unmap_all, the rest of the batch in a flush slot)
// whose signal handler forks. fork() is async-signal-safe (POSIX.1-2008), the
// thread holds no allocator lock there, so the fork handlers run. In the
// child the same thread exists and resumes its unmap_all over the rest of the
// batch, while postfork_child (recount_deferred_after_fork) has put the very
// same rest back on the stack and counted it in the heap's retired_waiting_.
// The child's next flush (trim) unmaps those segments a second time, and the
// heap's count is decremented twice per segment: it wraps, and the child's
// ~heap (wait_for_retired unbounded) never returns. Fixed: a flush slot
// names its thread, and the child leaves the forking thread's own batch to
// that thread's flush, uncounted (the heap's count is signed, and may end
// below 0 there, which counts as none).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <execinfo.h>

#include <cstdio>

#include "tests/attack40/common.h"

using namespace attack40;

namespace {

// Counts unmaps of arenas it did not map (or already unmapped) and skips the
// real call for them; stalls its first unmap_arena once `stall` is set.
struct tracking_os : dropalloc::testing::forwarding_os {
  using forwarding_os::forwarding_os;
  static constexpr int kMax = 4096;
  std::atomic<void*> live[kMax] = {};
  std::atomic<int> double_unmaps{0};
  std::atomic<bool> stall{false}, stalled{false}, release{false};
  void* map_arena(std::size_t b, std::size_t a, int* e) noexcept override {
    void* p = real.map_arena(b, a, e);
    if (p != nullptr) {
      for (auto& l : live) {
        void* none = nullptr;
        if (l.compare_exchange_strong(none, p)) break;
      }
    }
    return p;
  }
  void unmap_arena(void* p, std::size_t b) noexcept override {
    if (stall.exchange(false)) {
      stalled.store(true);
      while (!release.load()) usleep(1000);
    }
    for (auto& l : live) {
      void* want = p;
      if (l.compare_exchange_strong(want, nullptr)) {
        real.unmap_arena(p, b);
        return;
      }
    }
    ++double_unmaps;  // not ours any more: a second unmap
  }
};

tracking_os* g_os = nullptr;

void report_segv(int, siginfo_t* si, void*) {
  char buf[128];
  int n = std::snprintf(buf, sizeof buf, "child: SIGSEGV at %p, backtrace:\n", si->si_addr);
  (void)!write(2, buf, n);
  void* frames[32];
  backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
  _exit(4);
}
std::atomic<pid_t> g_child{0};
pid_t g_parent = 0;

void fork_in_handler(int) {
  g_os->release.store(true);
  const pid_t pid = fork();
  if (pid > 0) g_child.store(pid);
}

}  // namespace

TEST_CASE("fork from a signal handler of a thread mid-batch: the child unmaps the rest twice, its count wraps") {
  g_parent = getpid();
  os::fake_os real;
  static tracking_os tos(real);
  g_os = &tos;
  auto* h = new core::heap(dropalloc::testing::with_os_no_decay(&tos));
  core::unmap_deferred_segments();
  struct sigaction sa = {};
  sa.sa_handler = fork_in_handler;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGUSR1, &sa, nullptr) == 0);

  std::atomic<pthread_t> tid{};
  std::atomic<bool> ready{false};
  std::thread t([&] {
    tid.store(pthread_self());
    ready.store(true);
    std::size_t next = free_growing(*h, kLarge, kCacheSlots);  // the cache full
    tos.stall.store(true);
    // Each free now evicts one; the 16th makes the batch, whose flush stalls
    // in its first unmap: the signal arrives there.
    free_growing(*h, next, static_cast<int>(core::kRetiredBatchSegments));
    if (getpid() == g_parent) return;
    // The child (this thread, its only one).
    alarm(10);
    struct sigaction segv = {};
    segv.sa_sigaction = report_segv;
    segv.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &segv, nullptr);
    int bad = 0;
    h->trim();
    const int doubles = tos.double_unmaps.load();
    const std::int64_t waiting = h->retired_waiting().load();
    std::fprintf(stderr, "child: %d double unmaps, retired_waiting=%lld\n", doubles, static_cast<long long>(waiting));
    if (doubles != 0) bad |= 1;
    // Below 0 is allowed (the interrupted flush's own batch was not counted
    // in the child, and its unmaps still count down); above 0, ~heap waits
    // for segments nobody will unmap.
    if (waiting > 0) bad |= 2;
    std::fflush(stderr);
    // Would hang if waiting wrapped: SIGALRM ends the child then.
    delete h;
    _exit(bad);
  });
  while (!tos.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  pthread_kill(tid.load(), SIGUSR1);
  t.join();
  while (g_child.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  int status = 0;
  REQUIRE(waitpid(g_child.load(), &status, 0) == g_child.load());
  if (WIFSIGNALED(status)) {
    CHECK_MESSAGE(false, "child killed by signal ", WTERMSIG(status), " (14 = SIGALRM: ~heap hung)");
  } else {
    CHECK_MESSAGE((WEXITSTATUS(status) & 1) == 0, "child: segments unmapped twice");
    CHECK_MESSAGE((WEXITSTATUS(status) & 2) == 0, "child: retired_waiting above 0 after trim");
    CHECK_MESSAGE((WEXITSTATUS(status) & 4) == 0, "child: SIGSEGV (reading an unmapped segment's metadata)");
  }
  h->trim();
  CHECK(tos.double_unmaps.load() == 0);
  delete h;
}
