// A double free racing the unmapping of the block's (now empty) arena crashed
// the process, against "free of a bad pointer never crashes" (fixed: the fast
// path's lookup now runs in a read section, and the unmapper waits for it).
//
// The free fast path, heap::deallocate_cached() (core/heap.h), looks the
// pointer up with segment_at() and then reads the segment header (owner,
// base, span, magic, state array) outside any read section. Whoever unmaps an
// arena (trim(), and since the decay commits the background purger, on its
// own clock) removes it from the address map, waits for the readers that are
// inside a read section, and unmaps its metadata. The fast path is not one of
// those readers, so nothing waits for it: a free that found the segment in the
// map just before the removal reads the unmapped header.
//
// The test stops the freeing thread at exactly that read, deterministically:
// the page holding the segment header is made inaccessible, so the first read
// of the header faults; the fault handler makes the page readable again and
// holds the thread there (as a preemption at that instruction would) until
// the arena has been unmapped, then lets the read run again.
//
// Case 1 unmaps with trim(); case 2 only waits for the background purger.
#include <doctest/doctest.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "allocator/core/segment.h"
#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;

namespace {

std::atomic<std::uintptr_t> g_page{0};  // the protected header page
std::atomic<int> g_stalled{0};          // the freeing thread faulted on it
std::atomic<int> g_resume{0};           // the arena is gone: let it go
std::atomic<int> g_crashed{0};          // it faulted again, on unmapped memory
thread_local bool t_freer = false;
thread_local sigjmp_buf t_escape;
struct sigaction g_previous;

void on_fault(int sig, siginfo_t* info, void* ctx) {
  auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  std::uintptr_t page = g_page.load();
  if (page != 0 && addr >= page && addr < page + 4096) {
    if (t_freer && g_stalled.load() != 0) {
      // The second fault: the header is unmapped. This is the crash.
      g_crashed.store(1);
      siglongjmp(t_escape, 1);
    }
    if (t_freer) {
      mprotect(reinterpret_cast<void*>(page), 4096, PROT_READ | PROT_WRITE);
      g_stalled.store(1);
      while (g_resume.load() == 0) {
      }
      return;  // the faulting read runs again
    }
    // Another thread (the purger, trim) touched the page first: wait until
    // the freeing thread has faulted and made it accessible again.
    while (g_stalled.load() == 0) {
    }
    return;
  }
  sigaction(sig, &g_previous, nullptr);  // not ours: the previous disposition
  (void)ctx;
}

bool mapped(std::uintptr_t page) {
  return msync(reinterpret_cast<void*>(page), 4096, MS_ASYNC) == 0 || errno != ENOMEM;
}

void race(const dropalloc::resource_options& options, bool use_trim) {
  g_stalled.store(0);
  g_resume.store(0);
  g_crashed.store(0);
  droppable_resource res(options);
  constexpr std::size_t kSize = 64;
  void* p = res.allocate(kSize, 8);
  res.deallocate(p, kSize, 8);  // the block is free; its arena holds nothing live

  dropalloc::core::segment* s = dropalloc::core::segment_at(reinterpret_cast<std::uintptr_t>(p));
  REQUIRE(s != nullptr);
  auto page = reinterpret_cast<std::uintptr_t>(s) & ~std::uintptr_t{4095};

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGSEGV, &sa, &g_previous) == 0);
  g_page.store(page);
  REQUIRE(mprotect(reinterpret_cast<void*>(page), 4096, PROT_NONE) == 0);

  std::thread freer([&] {
    t_freer = true;
    if (sigsetjmp(t_escape, 1) == 0) res.deallocate(p, kSize, 8);  // the double free
  });
  while (g_stalled.load() == 0) {
  }
  // The freeing thread has found the segment in the map and is about to read
  // its header. Unmap the (empty) arena meanwhile, from another thread: the
  // unmapper must wait for the stalled free (it is in a read section), so the
  // metadata must stay mapped for as long as the free is held here.
  std::thread unmapper;
  if (use_trim) unmapper = std::thread([&] { res.trim(); });
  for (int i = 0; i < 500 && mapped(page); ++i) usleep(1000);
  const bool held = mapped(page);
  MESSAGE("the arena's metadata was " << (held ? "still mapped" : "unmapped")
                                      << " 0.5 s after the unmapping began, with the free stopped at its first header read");
  g_resume.store(1);
  freer.join();
  if (unmapper.joinable()) unmapper.join();
  g_page.store(0);
  sigaction(SIGSEGV, &g_previous, nullptr);
  CHECK(held);
  // A double free must be refused and reported, never fault.
  CHECK_MESSAGE(g_crashed.load() == 0, "the double free read the unmapped segment header (SIGSEGV)");
  // And once the free has let go, the arena does go back.
  if (use_trim) res.trim();
  for (int i = 0; i < 5000 && mapped(page); ++i) usleep(1000);
  CHECK(!mapped(page));
}

}  // namespace

TEST_CASE("a double free racing trim() never reads an unmapped arena") {
  dropalloc::resource_options o;
  o.background_decay = false;
  o.empty_arena_decay_ms = 60000;
  race(o, /*use_trim=*/true);
}

TEST_CASE("a double free racing the background purger never reads an unmapped arena") {
  dropalloc::resource_options o;
  o.thread_cache = false;  // the free empties the arena at once
  o.background_decay = true;
  // The spare empty arena goes after ten decay times. The purger blocks every
  // signal, so its first look at the arena (a quarter of the decay time after
  // the first free) must come after the freeing thread has faulted and made
  // the header page readable again: 20 ms (a 5 ms tick) crashed the test
  // about once in 30 runs on a loaded machine.
  o.empty_arena_decay_ms = 200;
  race(o, /*use_trim=*/false);
}
