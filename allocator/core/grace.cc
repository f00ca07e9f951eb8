#include "allocator/core/grace.h"

#include <errno.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "allocator/core/mutex.h"

#include "allocator/os/os.h"

namespace dropalloc::core {
namespace grace_internal {

std::atomic<std::uint64_t> g_epoch{1};
std::atomic<bool> g_asymmetric{false};
__thread reader_slot* t_slot __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

// Enough for every thread of any realistic program; a thread that finds none
// free reads under g_overflow_lock instead (slower, still correct).
constexpr std::uint32_t kSlots = 1024;
reader_slot g_slots[kSlots];
std::atomic<std::uint32_t> g_slots_used{0};  // slots [0, used) were ever taken
mutex g_overflow_lock;

// TSan does not know that a process barrier orders other threads' plain
// stores, so sanitized builds take the always-correct symmetric path.
#if defined(__SANITIZE_THREAD__)
constexpr bool kMayUseProcessBarrier = false;
#else
constexpr bool kMayUseProcessBarrier = true;
#endif

__attribute__((constructor)) void choose_barrier() {
  g_asymmetric.store(kMayUseProcessBarrier && os::register_process_barrier(), std::memory_order_relaxed);
}

// Whether the thread `tid` of this process has exited. A live thread that
// reuses the id of a dead one makes a slot look taken: it is then kept, never
// taken from a live thread.
bool thread_gone(int tid) noexcept {
  int saved = errno;
  bool gone = syscall(SYS_tgkill, getpid(), tid, 0) != 0 && errno == ESRCH;
  errno = saved;
  return gone;
}

// The calling thread's id, asked once (0: not yet; cleared in a forked child).
__thread int t_tid = 0;

int current_tid() noexcept {
  if (t_tid == 0) t_tid = static_cast<int>(syscall(SYS_gettid));
  return t_tid;
}

bool take(reader_slot& s, int from, int tid) noexcept {
  return s.owner.load(std::memory_order_relaxed) == from &&
         s.owner.compare_exchange_strong(from, tid, std::memory_order_acq_rel);
}

}  // namespace

// Takes a free slot, or else one whose thread has exited. Allocates nothing
// and takes no lock: it runs inside a read section, under any lock the reader
// holds.
reader_slot* claim_slot() noexcept {
  const int tid = current_tid();
  std::uint32_t used = g_slots_used.load(std::memory_order_acquire);
  reader_slot* got = nullptr;
  std::uint32_t i = 0;
  for (; i < kSlots && got == nullptr; ++i) {
    if (take(g_slots[i], 0, tid)) got = &g_slots[i];
  }
  if (got == nullptr) {
    // Every slot is taken: look for one left by a thread that has exited
    // (outside any section, so its epoch is 0).
    for (i = 0; i < kSlots && got == nullptr; ++i) {
      int owner = g_slots[i].owner.load(std::memory_order_relaxed);
      if (owner != tid && g_slots[i].epoch.load(std::memory_order_acquire) == 0 && thread_gone(owner) &&
          take(g_slots[i], owner, tid)) {
        got = &g_slots[i];
      }
    }
    if (got == nullptr) return nullptr;
  }
  while (used < i && !g_slots_used.compare_exchange_weak(used, i, std::memory_order_acq_rel)) {
  }
  t_slot = got;
  return got;
}

__thread int t_overflow_depth __attribute__((tls_model("initial-exec"))) = 0;

// Readers without a slot hold this lock for their whole read section, and a
// grace period takes it once: it waits out those readers and no new one can
// start until it is done.
void enter_overflow() noexcept {
  if (t_overflow_depth++ == 0) g_overflow_lock.lock();
}
void leave_overflow() noexcept {
  if (--t_overflow_depth == 0) g_overflow_lock.unlock();
}

}  // namespace grace_internal

using namespace grace_internal;

void wait_for_readers() noexcept {
  // Sections that load the new epoch began after the caller's map removal
  // (the acquire in read_section pairs with this release).
  std::uint64_t target = g_epoch.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (g_asymmetric.load(std::memory_order_relaxed) && os::process_barrier() != 0) {
    // Registered once, refused now (e.g. a seccomp filter installed since).
    // New sections publish with a full fence from here on. A section that
    // began before published with a plain store: a store buffer drains in
    // well under a microsecond, so wait far longer than that for it to show
    // (the best that can be done without the barrier).
    g_asymmetric.store(false, std::memory_order_seq_cst);
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, nullptr);
  }
  std::uint32_t used = g_slots_used.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < used; ++i) {
    if (&g_slots[i] == t_slot) continue;  // a caller inside a section never waits for itself
    for (int spins = 0;; ++spins) {
      std::uint64_t e = g_slots[i].epoch.load(std::memory_order_acquire);
      if (e == 0 || e >= target) break;
      // Read sections are a few dozen loads; a reader still inside one was
      // preempted: let it run.
      if (spins > 64) sched_yield();
    }
  }
  if (t_overflow_depth == 0) lock_guard wait_out_overflow_readers(g_overflow_lock);
}

void lock_readers_for_fork() noexcept { g_overflow_lock.lock(); }
void unlock_readers_after_fork() noexcept { g_overflow_lock.unlock(); }

void reset_readers_after_fork() noexcept {
  reader_slot* mine = t_slot;
  // The child's one thread has an id of its own: its slot must name it, or
  // another thread of the child would take the slot as its dead parent's.
  t_tid = 0;
  if (mine != nullptr) mine->owner.store(current_tid(), std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    if (&g_slots[i] == mine) continue;
    g_slots[i].epoch.store(0, std::memory_order_relaxed);
    g_slots[i].owner.store(0, std::memory_order_relaxed);
  }
  // A child is not registered for the process barrier; with one thread, the
  // switch of mode cannot race a reader.
  if (g_asymmetric.load(std::memory_order_relaxed) && !os::register_process_barrier()) {
    g_asymmetric.store(false, std::memory_order_relaxed);
  }
}

}  // namespace dropalloc::core
