// The queue of seal advice waiting to be given: (block, generation) pairs
// whose pages a heap will MADV_FREE in one batch (core/advice.cc says when
// and why that is safe). Only the queueing here; the heap gives the advice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "allocator/core/mutex.h"

namespace dropalloc::core {

struct pending_advice {
  const void* block;  // a block start, looked up again when the advice is given
  std::uint64_t gen;  // the generation it was sealed at: advised only if still so
  // Bit i (1-63): block index + i of the same arena was sealed after it and
  // queued here rather than in an entry of its own (advised if still sealed).
  // No default member initialiser: that would make every batch array on the
  // stack (3 KiB, one per seal) zeroed on each call. An entry queued by add()
  // starts with none.
  std::uint64_t next_sealed;
};
static_assert(std::is_trivially_default_constructible_v<pending_advice>);

// Where a sealed block is, for the queue: its arena (the arena's base and
// gen_base: arenas mapped at one address in turn differ in gen_base, since
// an unmapped arena raises the generation floor a new one starts from), its
// index there, and the page numbers (address / 4096) of its first and last
// page.
struct advice_place {
  const void* arena;
  std::uint64_t gen_base;
  std::uint32_t idx;
  std::uintptr_t first_page;
  std::uintptr_t last_page;
};

class advice_queue {
 public:
  // Entries. One madvise (and TLB-flush interrupt) per batch of small blocks:
  // at 64 entries of one block each, for 64 B blocks, that was one call per
  // page; at 256, seal_many() of 64 B blocks went from 0.31 to 0.245 us per
  // block, with the eviction order unchanged (bench/eviction). A block sealed
  // within 63 blocks after the block of the entry queued last, in the same
  // arena, is a bit of that entry instead: small blocks sealed in address
  // order take an entry per 64 blocks, and the queue fills by its pages.
  // Copies of a batch live on the stack (3 KiB).
  static constexpr int kBatch = 128;
  static constexpr std::size_t kMaxPages = 256;   // pages of the queued blocks (1 MiB)
  static constexpr std::uint64_t kMaxAgeMs = 10;  // of the oldest entry, looked at on add

  enum class added : std::uint8_t {
    busy,    // another thread holds the queue: nothing queued, advise at once
    first,   // queued into an empty queue
    queued,  // queued behind others
    full,    // queued, and the queue (full, at its page bound or old) moved to out
  };
  // Queues e (its block is at `at`) without waiting for the lock: as an
  // entry, or as a bit of the last one. On `full`, *n entries were moved to
  // out[0, kBatch) and the queue is empty.
  added add(const pending_advice& e, const advice_place& at, std::uint64_t now_ms, pending_advice* out,
            int* n) noexcept {
    if (!lock_.try_lock()) return added::busy;
    const bool was_empty = count_ == 0;
    if (was_empty) {
      since_ms_ = now_ms;
      pages_ = 0;
    }
    if (!was_empty && at.arena == last_.arena && at.gen_base == last_.gen_base && at.idx > last_.idx &&
        at.idx - last_.idx < 64) {
      items_[count_ - 1].next_sealed |= std::uint64_t{1} << (at.idx - last_.idx);
      // Pages counted once: blocks after the entry's start at or past its pages.
      const std::uintptr_t from = at.first_page > last_.last_page ? at.first_page : last_.last_page + 1;
      if (at.last_page >= from) pages_ += at.last_page - from + 1;
      if (at.last_page > last_.last_page) last_.last_page = at.last_page;
    } else {
      pages_ += at.last_page - at.first_page + 1;
      items_[count_] = e;
      items_[count_++].next_sealed = 0;  // bits are this queue's to set
      last_ = at;
    }
    added result = was_empty ? added::first : added::queued;
    if (count_ == kBatch || pages_ >= kMaxPages || now_ms - since_ms_ >= kMaxAgeMs) {
      *n = move_out(out);
      result = added::full;
    }
    lock_.unlock();
    return result;
  }
  // Moves every entry to out[0, kBatch); returns how many. Waits for the lock.
  int take_all(pending_advice* out) noexcept {
    lock_guard guard(lock_);
    return move_out(out);
  }
  // Held across fork() (a leaf: held only to copy entries in or out).
  void lock() noexcept { lock_.lock(); }
  void unlock() noexcept { lock_.unlock(); }

 private:
  int move_out(pending_advice* out) noexcept {
    const int n = count_;
    for (int i = 0; i < n; ++i) out[i] = items_[i];
    count_ = 0;
    return n;
  }
  mutex lock_;
  pending_advice items_[kBatch] = {};
  int count_ = 0;               // guarded by lock_
  advice_place last_ = {};      // items_[count_ - 1]'s block; last_page: of its bits too (guarded by lock_)
  std::size_t pages_ = 0;       // guarded by lock_
  std::uint64_t since_ms_ = 0;  // when items_[0] was queued (guarded by lock_)
};

}  // namespace dropalloc::core
