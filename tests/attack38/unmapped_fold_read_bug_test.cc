// Was FINDING 1 (fixed: return_to_arenas now asks the table alone, which
// names only the block's own arena). heap::return_to_arenas
// (allocator/core/heap.cc) looked each block up with segment_of() outside any read section ("the block is ours:
// its arena stays mapped"). Before the fold that lookup read only the table
// entry and the block's own header. segment_at() now first dereferences the
// header the FOLD entry names (s->base, s->span), which may be another
// heap's arena that only collides in the fold (64 GiB away) and that its
// owner is unregistering, waiting out readers (this thread is none) and
// unmapping right now: a read of unmapped metadata (SIGSEGV), or of
// whatever header was mapped there since.
//
// Heap A (no thread cache: every free goes give_back -> return_to_arenas)
// frees blocks of its arena at spot S over and over. Another thread creates
// and destroys heap X whose arena is at S + 64 GiB and holds the fold entry
// (it registered first / the entry was free). X's OS makes an unmapped
// header PROT_NONE instead of munmapping it, so a late read faults rather
// than reading a header that reused the address. To widen the window (a few
// instructions between the fold load and s->base), a third thread sends A
// SIGUSR1 often; the handler waits (bounded) for X to go through one more
// create/destroy cycle. The race runs in a forked child; the test fails if
// the child dies of a signal.
#include <doctest/doctest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "tests/attack38/common.h"
#include "tests/core_heap.h"

using namespace attack38;

namespace {

std::atomic<std::uint64_t> g_cycles{0};
std::atomic<std::uint64_t> g_signals{0};

std::uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

// The out-of-line copy of segment_at() (a fastbuild binary calls it; an
// optimised one inlines it, and the handler then waits at random points).
std::uintptr_t g_window_begin = 0, g_window_end = 0;
std::atomic<std::uint64_t> g_in_window{0};

void on_kick(int, siginfo_t*, void* ctx) {
  const int saved = errno;
  g_signals.fetch_add(1, std::memory_order_relaxed);
  const auto rip = static_cast<std::uintptr_t>(static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RIP]);
  if (g_window_end != 0 && (rip < g_window_begin || rip >= g_window_end)) {
    errno = saved;
    return;  // not between the fold load and the header reads: no use waiting
  }
  g_in_window.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t start = g_cycles.load(std::memory_order_acquire);
  const std::uint64_t deadline = now_ns() + 3000000;  // 3 ms: A may hold a section X waits for
  while (g_cycles.load(std::memory_order_acquire) < start + 2 && now_ns() < deadline) {
  }
  errno = saved;
}

// Headers X's OS made PROT_NONE ("unmapped"), for the fault report.
constexpr int kPoisonLog = 1 << 16;
std::atomic<std::uintptr_t> g_poison_begin[kPoisonLog], g_poison_end[kPoisonLog];
std::atomic<int> g_poison_n{0};

struct logging_os : one_spot_os {
  using one_spot_os::one_spot_os;
  void unmap_metadata(void* p, std::size_t b) noexcept override {
    int i = g_poison_n.fetch_add(1) % kPoisonLog;
    g_poison_begin[i] = reinterpret_cast<std::uintptr_t>(p);
    g_poison_end[i] = reinterpret_cast<std::uintptr_t>(p) + b;
    one_spot_os::unmap_metadata(p, b);
  }
};

void say(const char* s) { (void)!write(2, s, strlen(s)); }
void say_hex(std::uintptr_t v) {
  char buf[19] = "0x";
  for (int i = 0; i < 16; ++i) buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  buf[18] = 0;
  say(buf);
}

void on_segv(int sig, siginfo_t* info, void* ctx) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  const auto rip = static_cast<std::uintptr_t>(static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RIP]);
  core::segment* (*at)(std::uintptr_t) = &core::segment_at;
  say("attack38: SIGSEGV reading ");
  say_hex(addr);
  say(" at segment_at+");
  say_hex(rip - reinterpret_cast<std::uintptr_t>(at));
  // Callers (frame pointers: fastbuild keeps them), as offsets from
  // segment_at, for addr2line.
  auto* fp = reinterpret_cast<std::uintptr_t*>(static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RBP]);
  for (int depth = 0; depth < 3 && fp != nullptr; ++depth) {
    say(depth == 0 ? ", called from segment_at+" : " <- segment_at+");
    say_hex(fp[1] - reinterpret_cast<std::uintptr_t>(at));
    fp = reinterpret_cast<std::uintptr_t*>(fp[0]);
  }
  int n = g_poison_n.load();
  for (int i = 0; i < n && i < kPoisonLog; ++i) {
    if (addr >= g_poison_begin[i] && addr < g_poison_end[i]) {
      say(": inside the metadata of a colliding arena unmapped before (header made PROT_NONE)");
      break;
    }
  }
  say("\n");
  signal(sig, SIG_DFL);
  raise(sig);
}

// The race, in the child. Returns normally if it ran for `seconds` without
// a fault.
void race(int seconds, bool kick) {
  const std::uintptr_t spot = free_spots(2, kStep, 7);
  if (spot == 0) _exit(3);
  dropalloc::os::fake_os real;
  one_spot_os os_a(real, spot);
  logging_os os_x(real, spot + kFoldSpan);
  os_x.poison_metadata = true;
  core::heap_options opt_x = dropalloc::testing::with_os_no_decay(&os_x);
  opt_x.thread_cache = false;
  core::heap_options opt_a = dropalloc::testing::with_os_no_decay(&os_a);
  opt_a.thread_cache = false;

  // X first: its arena takes the fold entry; A's (same entry) is found
  // through the table.
  auto* x = new core::heap(opt_x);
  void* px = allocate(*x, 64);
  core::heap a(opt_a);
  void* keep = allocate(a, 64);
  if (px == nullptr || keep == nullptr || fold_index(px) != fold_index(keep)) _exit(4);
  if (core::g_segment_fold[fold_index(px)].load() != core::segment_of(px)) _exit(5);

  std::atomic<bool> stop{false};
  struct sigaction segv {};
  segv.sa_sigaction = on_segv;
  sigemptyset(&segv.sa_mask);
  segv.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &segv, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_kick;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_SIGINFO;
  if (std::getenv("ATTACK38_ANYWHERE") == nullptr) {
    core::segment* (*at)(std::uintptr_t) = &core::segment_at;
    g_window_begin = reinterpret_cast<std::uintptr_t>(at);
    g_window_end = g_window_begin + 0xa0;
  }
  sigaction(SIGUSR1, &sa, nullptr);

  std::thread churn([&] {
    core::heap* cur = x;
    while (!stop.load(std::memory_order_relaxed)) {
      delete cur;  // unregisters X's arena (the entry is cleared), waits for readers, "unmaps"
      cur = new core::heap(opt_x);
      if (allocate(*cur, 64) == nullptr) _exit(6);  // registers again: takes the free entry
      g_cycles.fetch_add(1, std::memory_order_release);
    }
    delete cur;
  });
  pthread_t a_thread = pthread_self();
  std::thread kicker([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      if (kick) pthread_kill(a_thread, SIGUSR1);
      for (int spin = 0; spin < 2000; ++spin) asm volatile("" ::: "memory");
    }
  });
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::uint64_t frees = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < 256; ++i) {
      void* p = allocate(a, 64);
      if (p == nullptr) _exit(7);
      a.deallocate(p);  // slow path: give_back -> return_to_arenas -> segment_of, no section
      ++frees;
    }
  }
  stop = true;
  kicker.join();
  churn.join();
  a.deallocate(keep);
  std::printf("attack38: %llu frees, %llu cycles of the colliding heap, %llu signals, %llu in segment_at\n",
              (unsigned long long)frees, (unsigned long long)g_cycles.load(),
              (unsigned long long)g_signals.load(), (unsigned long long)g_in_window.load());
  std::fflush(stdout);
}

}  // namespace

TEST_CASE("a free's give-back never reads the header of a colliding arena being unmapped") {
  const char* env = std::getenv("ATTACK38_SECONDS");
  const int seconds = env != nullptr ? std::atoi(env) : 30;
  const bool kick = std::getenv("ATTACK38_NO_KICK") == nullptr;
  std::fflush(stdout);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    race(seconds, kick);
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  if (WIFSIGNALED(status)) {
    FAIL("the child died of signal " << WTERMSIG(status)
                                     << ": a free read the header of a colliding arena after it was unmapped");
  }
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
