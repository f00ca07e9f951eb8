#include "allocator/core/grace.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

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

__thread bool t_exited = false;

// Gives the slot back when the thread exits: the destructor of a thread-
// specific key. Not a thread_local destructor or __cxa_thread_atexit_impl:
// registering those allocates (calloc), and a thread's first read section may
// open under a heap lock (check_all holds the segments lock), where an
// allocation would take the registry lock in the wrong order. A key below
// 32 keeps its values in the thread descriptor, so setting it allocates
// nothing; the key is made at load time, when few exist.
constexpr pthread_key_t kNoKey = ~pthread_key_t{0};
constexpr pthread_key_t kKeysWithoutAllocation = 32;
std::atomic<pthread_key_t> g_slot_key{kNoKey};

void release_slot_at_thread_exit(void* arg) {
  t_exited = true;
  t_slot = nullptr;
  static_cast<reader_slot*>(arg)->taken.store(false, std::memory_order_release);
}

__attribute__((constructor)) void make_slot_key() {
  pthread_key_t key;
  if (pthread_key_create(&key, release_slot_at_thread_exit) != 0) return;
  if (key >= kKeysWithoutAllocation) {
    // Setting it could allocate: keep slots for the thread's life instead
    // (a program that runs more than 1024 threads over its life then reads
    // under the overflow lock: slower, still correct).
    pthread_key_delete(key);
    return;
  }
  g_slot_key.store(key, std::memory_order_release);
}

// Unloaded (a plugin linking dropalloc statically, dlclose'd): no thread may
// call the destructor, which is about to be unmapped, at its exit. Threads
// still alive keep their slots taken.
__attribute__((destructor)) void drop_slot_key() {
  pthread_key_t key = g_slot_key.exchange(kNoKey, std::memory_order_acq_rel);
  if (key != kNoKey) pthread_key_delete(key);
}

}  // namespace

// A thread's first read sections borrow a slot and give it back at their end;
// its slot for life (given back by the key's destructor) comes with the
// section after these. A thread whose only calls are made while it exits,
// after glibc ran its key destructors (glibc frees other threads' cached
// stacks there, through free), would otherwise keep a slot that nothing gives
// back: 4000 rounds of 8 detached threads left 231 taken. A thread whose key
// destructor ran borrows for every section. Borrowing costs a scan of the
// slots and two shared writes per section, for a few sections of a thread.
constexpr std::uint32_t kLentSections = 32;
__thread std::uint32_t t_lent_sections = 0;

reader_slot* claim_slot(bool* temporary) noexcept {
  const bool for_life = !t_exited && t_lent_sections >= kLentSections;
  std::uint32_t used = g_slots_used.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    reader_slot& s = g_slots[i];
    bool expected = false;
    if (s.taken.load(std::memory_order_relaxed) ||
        !s.taken.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      continue;
    }
    while (used < i + 1 && !g_slots_used.compare_exchange_weak(used, i + 1, std::memory_order_acq_rel)) {
    }
    // Before the section publishes in it: a nested section, and a grace
    // period this thread waits for inside it, must find it as the thread's.
    // Unless a signal handler claimed one for life since the caller saw
    // none (its section has ended; a lent one it gave back): then that one
    // serves, and this one goes back. A compare-and-exchange, which a
    // handler cannot split: a check and a store could lose the handler's.
    reader_slot* mine = nullptr;
    if (!__atomic_compare_exchange_n(&t_slot, &mine, &s, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      s.taken.store(false, std::memory_order_release);
      *temporary = false;
      return mine;
    }
    *temporary = !for_life;
    if (!for_life) {
      if (!t_exited) ++t_lent_sections;
      return &s;
    }
    // Allocates nothing (see g_slot_key); without a key the slot stays taken.
    pthread_key_t key = g_slot_key.load(std::memory_order_acquire);
    if (key != kNoKey) (void)pthread_setspecific(key, &s);
    return &s;
  }
  return nullptr;
}

void release_temporary_slot(reader_slot* slot) noexcept {
  // A signal handler that runs before the slot is free claims another one.
  t_slot = nullptr;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  slot->taken.store(false, std::memory_order_release);
}

std::uint32_t slots_taken() noexcept {
  std::uint32_t n = 0;
  const std::uint32_t used = g_slots_used.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < used; ++i) n += g_slots[i].taken.load(std::memory_order_relaxed) ? 1 : 0;
  return n;
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
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    if (&g_slots[i] == mine) continue;
    g_slots[i].epoch.store(0, std::memory_order_relaxed);
    g_slots[i].taken.store(false, std::memory_order_relaxed);
  }
  // A child is not registered for the process barrier; with one thread, the
  // switch of mode cannot race a reader.
  if (g_asymmetric.load(std::memory_order_relaxed) && !os::register_process_barrier()) {
    g_asymmetric.store(false, std::memory_order_relaxed);
  }
}

}  // namespace dropalloc::core
