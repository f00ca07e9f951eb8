// Deferred seal advice: MADV_FREE for sealed blocks in MAP_DROPPABLE arenas,
// given in batches rather than one system call (and one TLB flush) per seal.
//
// Why deferring is safe there: MADV_FREE changes no contents; it only lets
// the kernel take a page without writing it back, and a droppable page can be
// taken at any time anyway. Truth rests on the witnesses, which the seal
// recorded before it returned. What the advice buys is an order: sealed pages
// go before others, oldest first. A batch keeps that order to within its few
// milliseconds. A block freed, or re-sealed, before its advice is given is
// skipped (its generation moved); one whose page was written since by a
// neighbour gets the page advised all the same, as an immediate seal's
// advice would have been (a write after the advice makes the page dirty
// again, and the kernel then keeps it).
//
// A block sealed within 63 blocks after the block of the entry queued last
// (same arena) is a bit of that entry rather than an entry of its own
// (advice_queue::add): small blocks sealed in address order take one entry
// per 64 blocks, and the queue fills by pages. Each such block is advised
// if it is sealed when the batch is given (its generation is not kept: a
// block freed and sealed again since was queued again, and one freed and
// not sealed again is not sealed), and only while its arena is the one it
// was queued in (no generation of a later arena at an address is as low as
// one of an earlier arena there).
#include <algorithm>

#include "allocator/core/heap.h"
#include "allocator/core/heap_internal.h"

namespace dropalloc::core {

using internal::now_ms;

void heap::advise_later(segment* s, std::uint32_t idx, std::uint64_t gen) noexcept {
  pending_advice batch[advice_queue::kBatch];
  int n = 0;
  const page_run run = block_pages(s, idx);
  const auto base_page = reinterpret_cast<std::uintptr_t>(s->base) / kPage;
  const advice_place at{s->base, s->gen_base, idx, base_page + run.first, base_page + run.last};
  switch (advice_.add(pending_advice{block_start(s, idx), gen, 0}, at, now_ms(), batch, &n)) {
    case advice_queue::added::busy: {
      // Another thread is adding to the queue or emptying it: no waiting,
      // and the advice now, as a batch of this one entry. Not
      // advise_sealed(): it only tries the block's seal lock, which the
      // thread holding the queue may hold too (the fork handler holds both),
      // and a block it gave up on was never advised. A droppable page's
      // advice only ranks it for reclaim: no lock is needed to give it.
      pending_advice only{block_start(s, idx), gen, 0};
      give_advice(&only, 1);
      break;
    }
    case advice_queue::added::first:
      // Decay flushes the queue: a heap with a purger thread gives the
      // advice even if no further seal comes.
      note_decay_work();
      break;
    case advice_queue::added::queued:
      break;
    case advice_queue::added::full:
      give_advice(batch, n);
      break;
  }
}

void heap::flush_advice() noexcept {
  pending_advice batch[advice_queue::kBatch];
  const int n = advice_.take_all(batch);
  if (n != 0) give_advice(batch, n);
}

void heap::give_advice(pending_advice* batch, int n) noexcept {
  // Arenas may have been unmapped since the entries were queued: each block
  // is looked up afresh, inside a read section (what is found stays mapped
  // until the advice is given), and advised only if still sealed at the
  // generation queued. Generations never repeat at an address, so a block
  // of a new arena mapped there is never taken for the queued one.
  std::sort(batch, batch + n, [](const pending_advice& a, const pending_advice& b) {
    return reinterpret_cast<std::uintptr_t>(a.block) < reinterpret_cast<std::uintptr_t>(b.block);
  });
  read_section reading;
  internal::seal_advice_runs runs(*os_);
  for (int k = 0; k < n; ++k) {
    std::uint32_t idx = 0;
    segment* s = find_block(batch[k].block, &idx);
    if (s == nullptr) continue;
    if ((s->state[idx].load(std::memory_order_acquire) & state::kMask) == state::kSealed &&
        s->generation_of(s->meta[idx].load(std::memory_order_acquire)) == batch[k].gen) {
      runs.add(s, idx);
    }
    if (batch[k].next_sealed == 0 || s->gen_base > batch[k].gen) continue;  // none, or another arena now
    for (std::uint64_t bits = batch[k].next_sealed; bits != 0; bits &= bits - 1) {
      const std::uint64_t j = idx + static_cast<std::uint64_t>(__builtin_ctzll(bits));
      if (j >= s->capacity) break;
      if ((s->state[j].load(std::memory_order_acquire) & state::kMask) == state::kSealed) {
        runs.add(s, static_cast<std::uint32_t>(j));
      }
    }
  }
  runs.flush();  // inside the read section: the arenas stay mapped meanwhile
}

}  // namespace dropalloc::core
