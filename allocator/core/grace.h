// Grace periods: metadata and arenas that lock-free readers can reach stay
// mapped until every reader that could hold a pointer to them is done.
//
// Readers (check, generation, usable_size, owns, seal, the checked free path)
// find a segment through the address map without a lock, then read its header,
// its metadata arrays and witness words in its arena. A thread that unmaps a
// segment (trim, decay, large frees, a heap's destructor) first removes it from
// the map, then waits for a grace period: until every reader that started
// before the removal has left its read section. Readers that start later cannot
// find the segment, so after the wait nothing can touch it.
//
// Cost to a reader: two stores to its own cache line. The writer pays a
// process-wide barrier (membarrier) per grace period; where that is missing,
// readers publish with a full fence instead.
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__GNUC__)
#define DROPALLOC_GRACE_LIKELY(x) __builtin_expect(!!(x), 1)
#define DROPALLOC_GRACE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define DROPALLOC_GRACE_LIKELY(x) (x)
#define DROPALLOC_GRACE_UNLIKELY(x) (x)
#endif

namespace dropalloc::core {

// One per thread that has read: the epoch it entered its read section in, or
// 0 outside one. A cache line each, so readers never share a line.
struct alignas(64) reader_slot {
  std::atomic<std::uint64_t> epoch{0};
  std::atomic<bool> taken{false};
};

namespace grace_internal {
extern std::atomic<std::uint64_t> g_epoch;       // starts at 1, only grows
extern std::atomic<bool> g_asymmetric;          // process_barrier() is available
extern __thread reader_slot* t_slot __attribute__((tls_model("initial-exec")));
extern __thread int t_overflow_depth __attribute__((tls_model("initial-exec")));
// A slot for a read section of a thread without one: the thread's own for
// the rest of its life, or (*temporary) one lent for this section only, given
// back by release_temporary_slot (see grace.cc, kLentSections). nullptr: none
// free. Sets t_slot either way.
reader_slot* claim_slot(bool* temporary) noexcept;
void release_temporary_slot(reader_slot* slot) noexcept;
std::uint32_t slots_taken() noexcept;            // now, lent ones included (tests)
void enter_overflow() noexcept;                 // no slot left: read under a lock
void leave_overflow() noexcept;
}  // namespace grace_internal

// Brackets the time a reader may hold a pointer to a segment found in the
// address map. Nests: only the outermost section publishes and retracts.
class read_section {
 public:
  read_section() noexcept {
    using namespace grace_internal;
    // Nested in a section read under the overflow lock: stay there (claiming a
    // slot now would publish an epoch the outer section never did).
    if (t_overflow_depth != 0) {
      overflow_ = true;
      enter_overflow();
      return;
    }
    reader_slot* slot = t_slot;
    bool temporary = false;
    if (slot == nullptr) slot = claim_slot(&temporary);
    if (slot == nullptr) {
      overflow_ = true;
      enter_overflow();
      return;
    }
    if (slot->epoch.load(std::memory_order_relaxed) != 0) return;  // nested
    slot_ = slot;
    temporary_ = temporary;
    // Acquire: a section that sees an epoch a writer published also sees
    // that writer's removal from the address map.
    std::uint64_t e = g_epoch.load(std::memory_order_acquire);
    if (g_asymmetric.load(std::memory_order_relaxed)) {
      // The writer's process barrier orders this store before our later loads.
      slot->epoch.store(e, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      slot->epoch.exchange(e, std::memory_order_seq_cst);  // a full fence
    }
  }
  ~read_section() {
    if (slot_ != nullptr) {
      slot_->epoch.store(0, std::memory_order_release);
      if (temporary_) grace_internal::release_temporary_slot(slot_);
    }
    if (overflow_) grace_internal::leave_overflow();
  }
  read_section(const read_section&) = delete;
  read_section& operator=(const read_section&) = delete;

 private:
  reader_slot* slot_ = nullptr;
  bool temporary_ = false;
  bool overflow_ = false;
};

// The free fast path's read section: the common case of read_section alone
// (a thread with a slot, outside any section), or nothing at all: when
// entered() is false the caller must not read the map and takes its slow path,
// which opens a full read_section. A thread with a slot never reads under the
// overflow lock (it claims a slot only at depth 0 and then always uses it), so
// the slot alone decides. Keeps the fast path free of the claim, overflow and
// nesting branches and their TLS lookups.
class fast_read_section {
 public:
  fast_read_section() noexcept {
    using namespace grace_internal;
    reader_slot* slot = t_slot;
    if (DROPALLOC_GRACE_UNLIKELY(slot == nullptr || slot->epoch.load(std::memory_order_relaxed) != 0)) return;
    slot_ = slot;
    std::uint64_t e = g_epoch.load(std::memory_order_acquire);  // as in read_section
    if (DROPALLOC_GRACE_LIKELY(g_asymmetric.load(std::memory_order_relaxed))) {
      slot->epoch.store(e, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      slot->epoch.exchange(e, std::memory_order_seq_cst);
    }
  }
  ~fast_read_section() {
    if (slot_ != nullptr) slot_->epoch.store(0, std::memory_order_release);
  }
  bool entered() const noexcept { return slot_ != nullptr; }
  fast_read_section(const fast_read_section&) = delete;
  fast_read_section& operator=(const fast_read_section&) = delete;

 private:
  reader_slot* slot_ = nullptr;
};

// Whether the calling thread is inside a read section (of either kind). A
// grace period it starts never waits for that section: what it unregisters
// there must not be unmapped before the section ends (segment.cc defers it).
inline bool in_read_section() noexcept {
  using namespace grace_internal;
  return t_overflow_depth != 0 || (t_slot != nullptr && t_slot->epoch.load(std::memory_order_relaxed) != 0);
}

// Waits until every read section that began before the call has ended. Call it
// after removing what readers must no longer reach from the address map, and
// before unmapping it. Never waits for sections that begin during the call.
void wait_for_readers() noexcept;

// fork(): held across it, so the child never inherits it locked.
void lock_readers_for_fork() noexcept;
void unlock_readers_after_fork() noexcept;
// In the child only the forking thread exists: forget the others' slots.
void reset_readers_after_fork() noexcept;

}  // namespace dropalloc::core
