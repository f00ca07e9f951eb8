// write_and_seal(block_ref&, src, n) promises: "`stale` (nothing written)
// unless its generation is still the block's; on return the handle names
// what was sealed" (allocator/pmr/droppable_resource.h). It checks the
// handle once, up front (refuse_unless_current: generation(p) == b.generation),
// and then writes through the raw pointer, seals it and takes whatever
// generation that seal produced into the handle. Nothing ties the write and
// the seal to the life that was checked. If the block is freed and handed out
// again (same address) between the check and the copy - another thread
// doing exactly what handles are for: freeing a block someone else may still
// hold a handle to - the old handle's call
//   * copies its bytes over the new owner's block,
//   * seals the new owner's block (an unsealed one keeps its generation, so
//     the NEW owner's handle now reads `intact` over bytes it never wrote;
//     a sealed one is re-sealed, so the new owner's handle reads `stale`
//     although it never freed anything),
//   * returns `intact` and moves the OLD handle onto the new life: the old
//     owner now holds a current handle to someone else's block (and its
//     deallocate(b) would free it).
// The same check-then-act gap is in seal(block_ref&), seal_rewritten(block_ref&)
// and deallocate(const block_ref&) (no caller memory is read there, so this
// test cannot pause them deterministically).
//
// Deterministic: the writer's source buffer is PROT_NONE; its first read,
// inside write_and_seal's memcpy (after the handle check), faults, and the
// fault handler waits until the main thread has freed and reallocated the
// block, then makes the buffer readable and lets the copy go on. A page fault
// or a preemption at that instruction is all it takes in a real program.
//
// Fixed: write_and_seal, seal and seal_rewritten through a handle compare
// the generation under the block's seal lock, and write_and_seal writes,
// seals and verifies under it, so a free of the block waits; deallocate of a
// handle retires only the life it names; and the caller's bytes are copied
// to private memory before any of that. This test now checks that nothing
// crosses from one life to the next.
//
// Where: allocator/pmr/droppable_resource.h write_and_seal(block_ref&) /
// seal(block_ref&) / seal_rewritten(block_ref&) (refuse_unless_current, then
// the raw-pointer call), droppable_resource.cc deallocate(const block_ref&).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::size_t kN = 3000;
unsigned char* g_src = nullptr;
std::atomic<int> g_paused{0};
std::atomic<int> g_go{0};
struct sigaction g_previous;

void on_fault(int sig, siginfo_t* info, void* ctx) {
  auto* a = static_cast<unsigned char*>(info->si_addr);
  if (g_src != nullptr && a >= g_src && a < g_src + 4096) {
    g_paused.store(1);
    while (g_go.load() == 0) {
    }
    mprotect(g_src, 4096, PROT_READ);
    return;
  }
  sigaction(sig, &g_previous, nullptr);
  (void)ctx;
}

void run(bool new_owner_seals) {
  droppable_resource res;
  g_paused = 0;
  g_go = 0;
  g_src = static_cast<unsigned char*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(g_src != MAP_FAILED);
  std::memset(g_src, 0xAA, kN);  // the old owner's new bytes
  REQUIRE(mprotect(g_src, 4096, PROT_NONE) == 0);

  std::vector<unsigned char> x(kN, 0x11), x2(kN, 0x22);
  block_ref b = res.allocate_block(kN);
  REQUIRE(res.write_and_seal(b, x.data(), kN) == block_state::intact);
  block_ref old_owner = b;  // the writer thread's handle

  block_state writer_result = block_state::foreign;
  std::thread writer([&] { writer_result = res.write_and_seal(old_owner, g_src, kN); });
  while (g_paused.load() == 0) {
  }
  // The writer passed its handle check and is inside the copy. Meanwhile
  // another thread frees the block (by pointer, as a program that does not
  // keep handles would) and allocates it again at the same address. The free
  // must wait for the write: the block is the writer's until write_and_seal
  // returns.
  std::atomic<bool> freed{false};
  block_ref nb;
  std::thread other([&] {
    res.deallocate(b.ptr, kN);
    freed.store(true);
    nb = res.allocate_block(kN);
    std::memcpy(nb.ptr, x2.data(), kN);
    if (new_owner_seals) CHECK(res.seal(nb) == block_state::intact);
  });
  // The source is read into a private copy before the block is touched, so
  // here the free does not wait: it comes first, and the write that follows
  // finds its handle stale and writes nothing. (A free arriving once the
  // block is being written waits for the seal lock.)
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  g_go.store(1);
  writer.join();
  other.join();
  // It held the block until sealed; its answer is a check made after that,
  // when the other thread may already have freed it: intact or stale.
  CHECK((writer_result == block_state::intact || writer_result == block_state::stale));

  REQUIRE(nb.ptr == b.ptr);
  REQUIRE(nb.generation != old_owner.generation);
  const bool overwritten = std::memcmp(nb.ptr, x2.data(), kN) != 0;
  block_state new_owner_sees = res.check(nb);
  MESSAGE("old handle's write_and_seal returned " << std::string(dropalloc::to_string(writer_result)) << "; old handle gen "
                                                  << b.generation << " -> " << old_owner.generation
                                                  << ", new owner's gen " << nb.generation << ", block gen now "
                                                  << res.generation(nb.ptr) << "; new owner's check: "
                                                  << std::string(dropalloc::to_string(new_owner_sees)));
  CHECK_MESSAGE(!overwritten, "a stale handle's write_and_seal wrote over the block's next life");
  CHECK(res.check(old_owner) == block_state::stale);
  CHECK_MESSAGE(old_owner.generation != res.generation(nb.ptr),
                "the stale handle was moved onto the next life of the block (it now names someone else's block)");
  if (new_owner_seals) {
    CHECK_MESSAGE(new_owner_sees == block_state::intact,
                  "the new owner's sealed block reads " << std::string(dropalloc::to_string(new_owner_sees))
                                                        << " though its owner never freed or changed it");
  } else {
    CHECK_MESSAGE(new_owner_sees == block_state::unsealed,
                  "the new owner's unsealed block reads " << std::string(dropalloc::to_string(new_owner_sees)));
  }
  // A handle of the old life is refused by every call that takes one.
  block_ref stale = old_owner;
  auto refused = res.stats().misuse_refused;
  CHECK(res.write_and_seal(stale, x.data(), kN) == block_state::stale);
  CHECK(res.seal(stale) == block_state::stale);
  CHECK(res.seal_rewritten(stale) == block_state::stale);
  res.deallocate(stale);
  CHECK(res.stats().misuse_refused == refused + 1);
  CHECK(std::memcmp(nb.ptr, x2.data(), kN) == 0);
  munmap(g_src, 4096);
  g_src = nullptr;
  res.deallocate(nb.ptr, kN);
}

}  // namespace

TEST_CASE("write_and_seal(block_ref&) of a handle whose block is freed and reused mid-call writes the next life") {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGSEGV, &sa, &g_previous) == 0);
  SUBCASE("the new owner left its block unsealed") { run(false); }
  SUBCASE("the new owner sealed its block") { run(true); }
  sigaction(SIGSEGV, &g_previous, nullptr);
}
