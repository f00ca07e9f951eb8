// A defect a review found (this test failed while it existed). Fixed: a free
// of an observed block takes the block's seal lock (core/heap.h, retire), so
// it cannot fall between a sealer's two exchanges.
//
// seal_block() (core/seal_check.cc) records the witnesses of the life it
// sealed in the meta word by compare-and-exchange (line 146: it fails if the
// block was freed since), and only then moves the state byte live -> sealed
// by a second compare-and-exchange (line 148). Between the two, the owner may
// free the block (retire() bumps the meta word to the next generation, witness
// 0) and allocate it again (same thread, so the same tag; allocate_block()
// marks it observed): the state byte is then bit for bit what the sealer
// expects, the second exchange succeeds, and the NEW life is `sealed` with the
// meta word the free left behind: no witness at all. From then on no drop of
// that block is ever detected: check() answers `intact` for zeros that nobody
// sealed.
//
// The test stops the sealer at exactly that instruction, deterministically:
// the page holding the block's state byte is made read-only, so the sealer's
// first write to it (the exchange at line 148, after the meta-word exchange,
// which is on another page) faults; the fault handler makes the page writable
// again and waits while the owner frees and reallocates the block. Stopping a
// thread there is what a preemption at that instruction does.
//
// Contracts relied on (notes on semantics, seal_all): "Metadata integrity
// (generations, double-free refusal) holds even if that contract is broken
// (frees / reallocations racing seal_all)". Here the seal_all contract is not
// even broken: nobody writes an unsealed block while seal_all runs (the owner
// only frees and reallocates). And the promise: a block check() calls
// `intact` holds exactly what was sealed.
#include <doctest/doctest.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>
#include <thread>

#include "allocator/core/segment.h"
#include "allocator/dropalloc.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

std::atomic<std::uintptr_t> g_page{0};      // the protected page
std::atomic<int> g_stalled{0};              // the sealer is stopped at its fault
std::atomic<int> g_resume{0};               // the owner is done: let it go
thread_local bool t_sealer = false;
struct sigaction g_previous;

void on_fault(int sig, siginfo_t* info, void* ctx) {
  auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  std::uintptr_t page = g_page.load();
  if (page != 0 && addr >= page && addr < page + 4096) {
    mprotect(reinterpret_cast<void*>(page), 4096, PROT_READ | PROT_WRITE);
    if (t_sealer) {
      g_stalled.store(1);
      while (g_resume.load() == 0) {
      }
    }
    return;  // the faulting write runs again, now allowed
  }
  // Not ours: the previous disposition.
  sigaction(sig, &g_previous, nullptr);
  (void)ctx;
}

}  // namespace

// Runs the race with seal_all() (or seal(p)) as the sealer.
static void race(bool all) {
  g_stalled.store(0);
  g_resume.store(0);
  droppable_resource res;
  constexpr std::size_t kSize = 64;
  // Arenas start small (their state and meta arrays then share a page) and
  // double: take blocks until one lies in a full-size arena.
  std::vector<void*> filler;
  dropalloc::block_ref b = res.allocate_block(kSize);
  while (dropalloc::core::segment_of(b.ptr)->span < dropalloc::core::kSegmentSize) {
    filler.push_back(b.ptr);
    b = res.allocate_block(kSize);
  }
  for (void* p : filler) res.deallocate(p, kSize);
  std::memset(b.ptr, 0xA5, kSize);  // written, then never written again

  dropalloc::core::segment* s = dropalloc::core::segment_of(b.ptr);
  REQUIRE(s != nullptr);
  std::uint32_t idx = 0;
  REQUIRE(dropalloc::core::block_index(s, b.ptr, &idx));
  auto state_page = reinterpret_cast<std::uintptr_t>(&s->state[idx]) & ~std::uintptr_t{4095};
  auto meta_page = reinterpret_cast<std::uintptr_t>(&s->meta[idx]) & ~std::uintptr_t{4095};
  REQUIRE(state_page != meta_page);  // the meta-word exchange must not fault

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGSEGV, &sa, &g_previous) == 0);

  g_page.store(state_page);
  REQUIRE(mprotect(reinterpret_cast<void*>(state_page), 4096, PROT_READ) == 0);
  std::size_t sealed = 0;
  std::thread sealer([&] {
    t_sealer = true;
    sealed = all ? res.seal_all() : (res.seal(b.ptr) == block_state::intact ? 1 : 0);
  });
  while (g_stalled.load() == 0) {
  }
  // The sealer has recorded the old life's witness and is about to flip the
  // state byte. The owner frees the block and gets it back. (Since the fix,
  // the free of an observed block waits for the block's seal lock, which the
  // stopped sealer holds: the owner cannot get in between. Let the sealer go
  // after a while, as a preempted thread would run again.)
  std::atomic<bool> owner_done{false};
  dropalloc::block_ref again;
  std::thread owner([&] {
    res.deallocate(b.ptr, kSize);
    again = res.allocate_block(kSize);
    owner_done.store(true);
  });
  for (int i = 0; i < 200 && !owner_done.load(); ++i) usleep(1000);
  const std::string owner_outcome = owner_done.load() ? "got in between" : "waited for the sealer";
  MESSAGE("the owner's free and reallocation " << owner_outcome);
  g_resume.store(1);
  owner.join();
  sealer.join();
  g_page.store(0);
  sigaction(SIGSEGV, &g_previous, nullptr);

  REQUIRE(again.ptr == b.ptr);  // same thread, same bin: the same block
  CHECK(again.generation != b.generation);
  CHECK(res.check(b.ptr, b.generation) == block_state::stale);
  block_state before = res.check(again.ptr, again.generation);
  MESSAGE(std::string(all ? "seal_all sealed " : "seal(p) sealed ") << sealed << "; the new life, never sealed by anyone after it began, reads "
                             << std::string(dropalloc::to_string(before)));

  // Whatever the new life is, a drop of its (non-zero) contents must not
  // read `intact`: every seal that ever read this block read 0xA5 bytes.
  REQUIRE(res.drop_for_testing(again.ptr, kSize) == 0);
  unsigned char first = *static_cast<unsigned char*>(again.ptr);
  block_state after = res.check(again.ptr, again.generation);
  MESSAGE("after the drop the block holds " << int(first) << "s and reads " << std::string(dropalloc::to_string(after)));
  CHECK(after != block_state::intact);
  res.deallocate(again.ptr, kSize);
}

TEST_CASE("seal_all racing a free and reallocation seals the new life without witnesses (fixed)") {
  race(true);
}

// seal(p) of a block whose owner frees and reallocates it meanwhile: any
// answer is fine for the sealer, but the new life must not end up sealed with
// no witness.
TEST_CASE("seal(p) racing a free and reallocation seals the new life without witnesses (fixed)") {
  race(false);
}
