// Coverage on the `busy` path (advice.cc, heap::advise_later): a seal whose
// advice queue is held by another thread is advised at once by
// advise_sealed(), which only try_locks the block's seal stripe and gives up
// (returns without any advice) when the stripe is held. The block is then
// neither queued nor advised: a sealed, unchanged block whose pages are never
// advised, not at the next flush either.
//
// Made deterministic with fork(): the allocator's prepare handler
// (prefork_all) holds every heap's advice lock and every seal stripe while
// the fork is made. A sealing thread is paused just after seal_block()
// released its stripe (in the os call arena_backing() that seal_in_section
// makes before advise_later) and let go from a pthread_atfork prepare handler
// registered before the allocator's (constructor priority 101, static link),
// which therefore runs after the allocator's own prepare handler.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;

namespace {

std::atomic<int> g_phase{0};  // 0 idle, 1 victim paused, 2 go, 3 victim done
std::atomic<bool> g_armed{false};
std::atomic<bool> g_prepare_ran_with_victim{false};
thread_local bool t_victim = false;
thread_local bool t_settled = false;

bool wait_for(int phase, int ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (g_phase.load() < phase) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

void prepare_after_allocator() {
  if (!g_armed.load()) return;
  g_prepare_ran_with_victim = true;
  g_phase = 2;                // the allocator's locks are held now: let the victim add
  (void)wait_for(3, 2000);   // until its seal() returned (or 2 s)
}

__attribute__((constructor(101))) void register_early() { pthread_atfork(prepare_after_allocator, nullptr, nullptr); }

struct hook_os : dropalloc::testing::recording_os {
  using recording_os::recording_os;
  int settle_translations() noexcept override {
    if (t_victim) t_settled = true;  // inside seal_block, under the seal stripe
    return recording_os::settle_translations();
  }
  dropalloc::backing arena_backing() noexcept override {
    if (t_victim && t_settled) {  // seal_in_section, after seal_block, before advise_later
      t_settled = false;
      t_victim = false;
      g_phase = 1;
      (void)wait_for(2, 5000);
    }
    return recording_os::arena_backing();
  }
};

}  // namespace

TEST_CASE("a seal that finds the advice queue busy and its seal stripe held is never advised") {
  os::fake_os fake;
  fake.reported_backing = dropalloc::backing::droppable;
  hook_os rec(fake);
  core::heap h(dropalloc::testing::with_os_no_decay(&rec));

  void* p = dropalloc::testing::allocate_large(h, 4096);  // class 4096: a page of its own
  std::memset(p, 0x5a, 4096);
  const std::uint64_t before = rec.mark();
  std::uint64_t gen = 0;
  block_state answer = block_state::foreign;
  g_armed = true;
  std::thread victim([&] {
    t_victim = true;
    answer = h.seal(p, &gen);
    g_phase = 3;
  });
  REQUIRE(wait_for(1, 5000));
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  REQUIRE(pid > 0);
  g_armed = false;
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  victim.join();
  CHECK(g_prepare_ran_with_victim.load());
  REQUIRE(answer == block_state::intact);

  CHECK(h.seal_all() == 0);  // gives the queue (the block is not in it)
  CHECK(h.decay(false) >= 0);
  CHECK(h.check(p, gen) == block_state::intact);  // sealed, unchanged
  INFO("advice since the seal: " << rec.bytes_since(before) << " bytes");
  CHECK(rec.advised(reinterpret_cast<std::uintptr_t>(p), before));  // fails: never advised
  h.deallocate(p);
}

// Control: the same pause without a fork (nothing holds the queue or the
// stripe when the victim goes on): queued, and advised at the next flush.
TEST_CASE("control: the same paused seal without a fork is advised") {
  os::fake_os fake;
  fake.reported_backing = dropalloc::backing::droppable;
  hook_os rec(fake);
  core::heap h(dropalloc::testing::with_os_no_decay(&rec));
  void* p = dropalloc::testing::allocate_large(h, 4096);
  std::memset(p, 0x5a, 4096);
  const std::uint64_t before = rec.mark();
  std::uint64_t gen = 0;
  block_state answer = block_state::foreign;
  g_phase = 0;
  std::thread victim([&] {
    t_victim = true;
    answer = h.seal(p, &gen);
    g_phase = 3;
  });
  REQUIRE(wait_for(1, 5000));
  g_phase = 2;
  victim.join();
  REQUIRE(answer == block_state::intact);
  CHECK(h.seal_all() == 0);
  CHECK(h.check(p, gen) == block_state::intact);
  CHECK(rec.advised(reinterpret_cast<std::uintptr_t>(p), before));
  h.deallocate(p);
}
