// Contract: write_and_seal(p, src, n) "Throws std::length_error if n exceeds
// usable_size(p), writing nothing"; "`stale` / `foreign`: p is not a live block
// of this resource, nothing was written"; and asking with any pointer at any
// moment never crashes.
//
// What happens: the size is checked against the block in one read section and
// the block is looked up again, and written, in another:
//   droppable_resource::write_and_seal: usable_size(p)       (section 1)
//   heap::write_and_seal: find_block, n > block_bytes(s)?    (section 2)
//   heap::seal(p, req): find_block(p) again, seal_block      (section 3)
// and seal_block writes req.n bytes and zeroes block_bytes(s) - req.n more
// with the segment found in section 3, never comparing n with its block size.
// If, between sections 2 and 3, the block is freed, its arena unmapped (trim,
// or the background purger on its own clock) and an arena of a smaller class
// mapped at the same address with a live block at p (the kernel hands the
// same address back; the fake OS here does it on purpose), seal_block copies
// n bytes over that block and its neighbours and then zero_tail(start + n,
// size - n) runs with size - n wrapped to nearly 2^64: it zeroes its way past
// the arena until it faults. A raw-pointer call racing a free of the same
// block is a caller's race, but the promise is that such a call writes
// nothing or the block it validated, not memory past any block, and never
// crashes. (Calls through a block_ref are safe: seal_block compares the
// generation, which differs in every arena at that address.)
//
// Deterministic: the writing thread is single-stepped (the trap flag set from
// a signal handler) until its second read section has closed; there another
// thread frees the block, trims and allocates 16-byte blocks, and the writer
// goes on. Runs in a forked child; the test fails if the child dies.
//
// Where: allocator/core/seal_check.cc heap::write_and_seal (size check in its
// own read section) and heap::seal / seal_block (memcpy req.n, zero_tail
// size - req.n with no check of req.n against block_bytes(s)).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/ucontext.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr long kTrapFlag = 0x100;
std::atomic<int> g_stopped{0};
std::atomic<int> g_resume{0};
int g_closes = 0;
bool g_in_section = false;
long g_steps = 0;

// After each instruction of the writer: count the read sections it closes.
void on_step(int, siginfo_t*, void* ctx) {
  auto* uc = static_cast<ucontext_t*>(ctx);
  ++g_steps;
  auto* slot = dropalloc::core::grace_internal::t_slot;
  const bool in = slot != nullptr && slot->epoch.load(std::memory_order_relaxed) != 0;
  if (g_in_section && !in) ++g_closes;
  g_in_section = in;
  if (g_closes == 2 || g_steps > 5'000'000) {
    uc->uc_mcontext.gregs[REG_EFL] &= ~kTrapFlag;
    if (g_closes == 2) {
      g_stopped.store(1);
      while (g_resume.load() == 0) {
      }
    }
    return;
  }
  uc->uc_mcontext.gregs[REG_EFL] |= kTrapFlag;
}

// In the child: say where the fault was, then die of it.
std::uintptr_t g_arena = 0;
void on_crash(int sig, siginfo_t* info, void*) {
  char line[200];
  auto a = reinterpret_cast<std::uintptr_t>(info->si_addr);
  int len = snprintf(line, sizeof line, "child: %s at %#lx, %+ld bytes from the start of the block (writer %s)\n",
                     strsignal(sig), static_cast<unsigned long>(a), static_cast<long>(a - g_arena),
                     g_resume.load() != 0 ? "resumed after the swap" : "not yet resumed");
  ssize_t ignored = write(2, line, static_cast<std::size_t>(len));
  (void)ignored;
  signal(sig, SIG_DFL);
  raise(sig);
}

void start_stepping(int, siginfo_t*, void* ctx) {
  static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_EFL] |= kTrapFlag;
}

// 0: nothing past the block was written; 2: could not arrange the address
// reuse; 3: the call returned but wrote over other blocks.
int child() {
  dropalloc::os::fake_os os;
  os.reuse_unmapped_arena = true;
  dropalloc::resource_options o;
  o.os = &os;
  o.thread_cache = false;  // blocks go straight back to their arena
  droppable_resource res(o);
  void* p = res.allocate(4096);
  const std::size_t n = res.usable_size(p);
  std::vector<unsigned char> src(n, 0xab);
  std::vector<void*> small;
  bool reused = false;
  std::thread other([&] {
    while (g_stopped.load() == 0) {
    }
    // The writer has validated p and n and left its read section.
    res.deallocate(p, 4096);
    res.trim();
    for (int i = 0; i < 256; ++i) {
      void* q = res.allocate(16);
      std::memset(q, 0x33, 16);
      small.push_back(q);
    }
    reused = small[0] == p;
    fprintf(stderr, "child: p freed, arena trimmed, 16-byte block at p: %s; writer resumes\n", reused ? "yes" : "no");
    g_resume.store(1);
  });
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = on_step;
  sigaction(SIGTRAP, &sa, nullptr);
  sa.sa_sigaction = on_crash;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
  g_arena = reinterpret_cast<std::uintptr_t>(p);
  sa.sa_sigaction = start_stepping;
  sigaction(SIGUSR1, &sa, nullptr);
  (void)res.owns(p);  // the thread's read slot exists before stepping starts
  raise(SIGUSR1);
  block_state st = res.write_and_seal(p, src.data(), n);
  if (g_stopped.load() == 0) {
    g_resume.store(1);
    g_stopped.store(1);
  }
  other.join();
  if (!reused) {
    fprintf(stderr, "child: the 16-byte arena did not land at the freed address (steps %ld)\n", g_steps);
    return 2;
  }
  int changed = 0;
  for (void* q : small) {
    for (int i = 0; i < 16; ++i) changed += static_cast<unsigned char*>(q)[i] != 0x33;
  }
  fprintf(stderr, "child: write_and_seal returned %s; %d bytes of the new 16-byte blocks changed\n",
          dropalloc::to_string(st), changed);
  return changed == 0 ? 0 : 3;
}

}  // namespace

TEST_CASE("write_and_seal(p) never writes past the block it validated, even when p's arena is replaced mid-call") {
  fflush(stderr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(child());
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  if (WIFSIGNALED(status)) {
    MESSAGE("the child died of signal " << WTERMSIG(status) << " (" << std::string(strsignal(WTERMSIG(status)))
                                        << ") inside write_and_seal");
  }
  CHECK_MESSAGE(WIFEXITED(status), "write_and_seal crashed: it wrote n bytes and zeroed (block size - n), wrapped, "
                                   "into the 16-byte block now at p and past the arena");
  if (WIFEXITED(status)) {
    CHECK_MESSAGE(WEXITSTATUS(status) != 2, "setup: the address was not reused (nothing shown)");
    CHECK_MESSAGE(WEXITSTATUS(status) == 0, "write_and_seal wrote over other blocks");
  }
}
