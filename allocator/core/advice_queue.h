// The queue of seal advice waiting to be given: (block, generation) pairs
// whose pages a heap will MADV_FREE in one batch (core/advice.cc says when
// and why that is safe). Only the queueing here; the heap gives the advice.
#pragma once

#include <cstddef>
#include <cstdint>

#include "allocator/core/mutex.h"

namespace dropalloc::core {

struct pending_advice {
  const void* block;  // a block start, looked up again when the advice is given
  std::uint64_t gen;  // the generation it was sealed at: advised only if still so
};

// The pages a queued block touches, [first, last] by address (its first
// page's start and its last page's start), and which arena they belong to:
// its gen_base, different for every arena mapped at an address since (an
// unmapped arena raises the generation floor that a new one starts from).
struct advice_pages {
  const void* first;
  const void* last;
  std::uint64_t arena;
  std::size_t count() const noexcept {
    return static_cast<std::size_t>(static_cast<const char*>(last) - static_cast<const char*>(first)) / 4096 + 1;
  }
};

class advice_queue {
 public:
  // Entries. One madvise (and TLB-flush interrupt) per batch of small blocks:
  // at 64, for 64 B blocks, that was one call per page; at 256, seal_many() of
  // 64 B blocks went from 0.31 to 0.245 us per block, with the eviction order
  // unchanged (bench/eviction). Copies of a batch live on the stack (4 KiB).
  // A block whose pages all lie within those of the entry queued last adds
  // no entry: that entry's advice covers its pages (small blocks sealed in
  // address order fill one entry per page, not 64).
  static constexpr int kBatch = 256;
  static constexpr std::size_t kMaxPages = 256;      // pages of the queued blocks (1 MiB)
  static constexpr std::uint64_t kMaxAgeMs = 10;     // of the oldest entry, looked at on add

  enum class added : std::uint8_t {
    busy,    // another thread holds the queue: nothing queued, advise at once
    first,   // queued into an empty queue
    queued,  // queued behind others
    full,    // queued, and the queue (full, at its page bound or old) moved to out
  };
  // Queues e (its block's pages: `pages`) without waiting for the lock, or
  // nothing if the last entry's pages hold them. On `full`, *n entries were
  // moved to out[0, kBatch) and the queue is empty.
  added add(const pending_advice& e, const advice_pages& pages, std::uint64_t now_ms, pending_advice* out,
            int* n) noexcept {
    if (!lock_.try_lock()) return added::busy;
    const bool was_empty = count_ == 0;
    if (was_empty) {
      since_ms_ = now_ms;
      pages_ = 0;
    }
    if (was_empty || pages.arena != last_.arena || pages.first < last_.first || pages.last > last_.last) {
      pages_ += pages.count();
      items_[count_++] = e;
      last_ = pages;
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
  advice_pages last_ = {};      // the pages of items_[count_ - 1] (guarded by lock_)
  std::size_t pages_ = 0;       // guarded by lock_
  std::uint64_t since_ms_ = 0;  // when items_[0] was queued (guarded by lock_)
};

}  // namespace dropalloc::core
